#!/usr/bin/env bash
# Record a set of six reference training runs (CNN and ViT, seeds 45-47) with `bandscope train`,
# on two lanes with one torch thread each. Run from anywhere; paths are relative to the repository.
#
#   tools/record_runs.sh SET [NAME]
#
# SET is the run set's directory under reference_runs/ (its settings are below); NAME records one
# run (e.g. cnn-seed46), all six when omitted. Re-running resumes unfinished runs from their last
# checkpoint (the git-ignored state/ directory); finished runs return at once. BANDSCOPE names the
# command to use (default .venv/bin/bandscope, as installed by `make reproduce`).
# The single-run pilots under reference_runs/pilots/ are re-run from their command.txt.
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."
SET=${1:?usage: tools/record_runs.sh SET [NAME]   (SET: recorded, pilots/cnn-lr3e-3-7680steps-vit-3840steps, pilots/paper-lr-cnn-1920steps-vit-1280steps)}
BS=${BANDSCOPE:-.venv/bin/bandscope}
COMMON="--size 32 --n-train 8192 --n-test 2048 --threads 1 --no-progress"
case "$SET" in
  recorded)  # the reference set: CNN lr 1e-3 x 23,040 steps, ViT lr 3e-4 x 15,360 steps
    CNN="--arch cnn --epochs 360 --lr 1e-3"; VIT="--arch vit --vit-patch 8 --epochs 240" ;;
  pilots/cnn-lr3e-3-7680steps-vit-3840steps)
    CNN="--arch cnn --epochs 120 --lr 3e-3"; VIT="--arch vit --vit-patch 8 --epochs 60" ;;
  pilots/paper-lr-cnn-1920steps-vit-1280steps)
    CNN="--arch cnn --epochs 30"; VIT="--arch vit --vit-patch 8 --epochs 20" ;;
  *) echo "unknown run set $SET" >&2; exit 2 ;;
esac
run() {  # name, extra args
  local name=$1; shift
  local out=reference_runs/$SET/$name
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
# Each name is run by a fresh invocation of this script, so edits to the settings above apply to
# runs not yet started.
lane() { for name in "$@"; do "$SELF" "$SET" "$name"; done; }
case "${2:-all}" in
  all) lane cnn-seed45 cnn-seed46 vit-seed47 & lane vit-seed45 vit-seed46 cnn-seed47 & wait ;;
  *) one "$2" ;;
esac
