#!/usr/bin/env bash
# Record the forecast's held-out CNN runs (reference_runs/forecast-heldout/) with `bandscope train`:
# new seeds (50-57) and settings unlike the calibration corpus (latent widths 64 / 128 / 256,
# lr 2e-3 to 5e-3, 1,920 and 2,560 steps), on four lanes with one torch thread each, at nice 10.
#
#   tools/record_forecast_heldout.sh [NAME]
#
# NAME records one run (a directory name below), all eight on four lanes when omitted. Re-running
# resumes unfinished runs from their last checkpoint (the git-ignored state/ directory); finished
# runs return at once. BANDSCOPE names the command to use (default .venv/bin/bandscope).
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."
SET=forecast-heldout
BS=${BANDSCOPE:-.venv/bin/bandscope}
COMMON="--arch cnn --size 32 --n-train 8192 --n-test 2048 --threads 1 --no-progress"
settings() {  # the settings of one run by name (64 steps per epoch)
  case "$1" in
    cnn-lr3e-3-1920steps-latent128-seed50) echo "--lr 3e-3 --epochs 30 --latent-dim 128 --seed 50" ;;
    cnn-lr3e-3-1920steps-latent64-seed51)  echo "--lr 3e-3 --epochs 30 --latent-dim 64 --seed 51" ;;
    cnn-lr2e-3-2560steps-latent128-seed52) echo "--lr 2e-3 --epochs 40 --latent-dim 128 --seed 52" ;;
    cnn-lr3e-3-2560steps-latent256-seed53) echo "--lr 3e-3 --epochs 40 --latent-dim 256 --seed 53" ;;
    cnn-lr5e-3-1920steps-latent128-seed54) echo "--lr 5e-3 --epochs 30 --latent-dim 128 --seed 54" ;;
    cnn-lr5e-3-1920steps-latent64-seed55)  echo "--lr 5e-3 --epochs 30 --latent-dim 64 --seed 55" ;;
    cnn-lr3e-3-1920steps-latent256-seed56) echo "--lr 3e-3 --epochs 30 --latent-dim 256 --seed 56" ;;
    cnn-lr4e-3-1920steps-latent128-seed57) echo "--lr 4e-3 --epochs 30 --latent-dim 128 --seed 57" ;;
    *) return 2 ;;
  esac
}
one() {
  local name=$1 args
  args=$(settings "$name") || { echo "unknown run $name" >&2; return 2; }
  local out=reference_runs/$SET/$name
  mkdir -p "$out"
  echo "$BS train $args $COMMON --out $out" > "$out/command.txt"
  echo "start $(date -u +%FT%TZ)" >> "$out/train.log"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 nice -n 10 $BS train $args $COMMON --out "$out" >> "$out/train.log" 2>&1
  echo "exit $? $(date -u +%FT%TZ)" >> "$out/train.log"
}
lane() { for name in "$@"; do "$SELF" "$name"; done; }
case "${1:-all}" in
  all) lane cnn-lr3e-3-1920steps-latent128-seed50 cnn-lr5e-3-1920steps-latent128-seed54 &
       lane cnn-lr3e-3-1920steps-latent64-seed51 cnn-lr5e-3-1920steps-latent64-seed55 &
       lane cnn-lr2e-3-2560steps-latent128-seed52 cnn-lr3e-3-1920steps-latent256-seed56 &
       lane cnn-lr3e-3-2560steps-latent256-seed53 cnn-lr4e-3-1920steps-latent128-seed57 &
       wait ;;
  *) one "$1" ;;
esac
