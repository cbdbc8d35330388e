# Shared by reference_runs/*/run_all.sh: records six runs (CNN and ViT, seeds 45-47) into the
# calling script's directory on two lanes, one torch thread each. The caller sets CNN and VIT
# (the `bandscope train` arguments per architecture) and then sources this file.
# Usage of a caller: run_all.sh [NAME]   (one run, e.g. cnn-seed46; all six when omitted).
# Re-running resumes unfinished runs from their last checkpoint; finished runs return at once.
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
DIR=$(basename "$(dirname "$SELF")")
cd "$(dirname "$SELF")/../.."
BS=.venv/bin/bandscope
COMMON="--size 32 --n-train 8192 --n-test 2048 --threads 1 --no-progress"
run() {  # name, extra args
  local name=$1; shift
  local out=reference_runs/$DIR/$name
  mkdir -p "$out"
  echo "$BS train $* $COMMON --out $out" > "$out/command.txt"
  echo "start $(date -u +%FT%TZ)" >> "$out/train.log"
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 $BS train "$@" $COMMON --out "$out" >> "$out/train.log" 2>&1
  echo "exit $? $(date -u +%FT%TZ)" >> "$out/train.log"
}
one() {  # one run by name: cnn-seedN or vit-seedN
  local arch=${1%%-*} seed=${1##*seed}
  local args
  case "$arch" in
    cnn) args=$CNN ;;
    vit) args=$VIT ;;
    *) echo "unknown run $1 (want cnn-seedN or vit-seedN)" >&2; return 2 ;;
  esac
  if [ "$1" = cnn-seed45 ]; then args="$args --save-weights --save-recon"; fi
  run "$1" $args --seed "$seed"
}
# Each name is run by a fresh invocation of the caller, so edits to its CNN= / VIT= apply to
# runs not yet started.
lane() { for name in "$@"; do "$SELF" "$name"; done; }
case "${1:-all}" in
  all) lane cnn-seed45 cnn-seed46 vit-seed47 & lane vit-seed45 vit-seed46 cnn-seed47 & wait ;;
  *) one "$1" ;;
esac
