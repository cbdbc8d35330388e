#!/usr/bin/env bash
# Reference runs of bandscope (see README.md here): 6 runs on two lanes, one torch thread each.
# Re-running this script resumes unfinished runs from their last checkpoint (finished runs
# return immediately). Usage: run_all.sh [NAME]   (one run, e.g. cnn-seed46; all six when omitted)
set -u
cd "$(dirname "$0")/../.."
DIR=$(basename "$(dirname "$0")")
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
CNN="--arch cnn --epochs 360 --lr 1e-3"
VIT="--arch vit --vit-patch 8 --epochs 240"
one() {  # one run by name: cnn-seedN or vit-seedN
  local arch=${1%%-*} seed=${1##*seed}
  local args; if [ "$arch" = cnn ]; then args=$CNN; else args=$VIT; fi
  if [ "$1" = cnn-seed45 ]; then args="$args --save-weights --save-recon"; fi
  run "$1" $args --seed "$seed"
}
# Each name is run by a fresh invocation of this script, so edits to CNN= / VIT= apply to
# runs not yet started.
lane() { for name in "$@"; do "$0" "$name"; done; }
case "${1:-all}" in
  all) lane cnn-seed45 cnn-seed46 vit-seed47 & lane vit-seed45 vit-seed46 cnn-seed47 & wait ;;
  *) one "$1" ;;
esac
