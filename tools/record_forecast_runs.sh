#!/usr/bin/env bash
# Record the forecast's held-out CNN runs (reference_runs/forecast-heldout/) with `bandscope train`:
# new seeds (50-61) and settings unlike the calibration corpus (batch 64 and 128, latent widths
# 64 / 128 / 256, lr 2e-3 to 5e-3, about 1,000 steps), on six lanes with one torch thread each, at nice 10.
#
#   tools/record_forecast_heldout.sh [NAME]
#
# NAME records one run (a directory name below), all twelve on six lanes when omitted. Re-running
# resumes unfinished runs from their last checkpoint (the git-ignored state/ directory); finished
# runs return at once. BANDSCOPE names the command to use (default .venv/bin/bandscope).
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."
SET=forecast-heldout
BS=${BANDSCOPE:-.venv/bin/bandscope}
COMMON="--arch cnn --size 32 --n-train 8192 --n-test 2048 --threads 1 --no-progress"
settings() {  # the settings of one run by name
  case "$1" in
    cnn-b64-lr3e-3-1024steps-latent128-seed50) echo "--batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --seed 50" ;;
    cnn-b64-lr3e-3-1024steps-latent64-seed51) echo "--batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 64 --seed 51" ;;
    cnn-b64-lr2e-3-1024steps-latent128-seed52) echo "--batch-size 64 --lr 2e-3 --epochs 8 --latent-dim 128 --seed 52" ;;
    cnn-b64-lr5e-3-1024steps-latent64-seed53) echo "--batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 64 --seed 53" ;;
    cnn-b128-lr3e-3-960steps-latent128-seed54) echo "--batch-size 128 --lr 3e-3 --epochs 15 --latent-dim 128 --seed 54" ;;
    cnn-b128-lr5e-3-960steps-latent64-seed55) echo "--batch-size 128 --lr 5e-3 --epochs 15 --latent-dim 64 --seed 55" ;;
    cnn-b64-lr5e-3-1024steps-latent128-seed56) echo "--batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 128 --seed 56" ;;
    cnn-b64-lr2e-3-1024steps-latent256-seed57) echo "--batch-size 64 --lr 2e-3 --epochs 8 --latent-dim 256 --seed 57" ;;
    cnn-b64-lr3e-3-1024steps-latent256-seed58) echo "--batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 256 --seed 58" ;;
    cnn-b64-lr4e-3-1024steps-latent128-seed59) echo "--batch-size 64 --lr 4e-3 --epochs 8 --latent-dim 128 --seed 59" ;;
    cnn-b64-lr3e-3-1024steps-latent128-seed60) echo "--batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --seed 60" ;;
    cnn-b64-lr5e-3-1024steps-latent256-seed61) echo "--batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 256 --seed 61" ;;
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
  all) lane cnn-b64-lr3e-3-1024steps-latent128-seed50 cnn-b64-lr5e-3-1024steps-latent128-seed56 &
       lane cnn-b64-lr3e-3-1024steps-latent64-seed51 cnn-b64-lr2e-3-1024steps-latent256-seed57 &
       lane cnn-b64-lr2e-3-1024steps-latent128-seed52 cnn-b64-lr3e-3-1024steps-latent256-seed58 &
       lane cnn-b64-lr5e-3-1024steps-latent64-seed53 cnn-b64-lr4e-3-1024steps-latent128-seed59 &
       lane cnn-b128-lr3e-3-960steps-latent128-seed54 cnn-b64-lr3e-3-1024steps-latent128-seed60 &
       lane cnn-b128-lr5e-3-960steps-latent64-seed55 cnn-b64-lr5e-3-1024steps-latent256-seed61 &
       wait ;;
  *) one "$1" ;;
esac
