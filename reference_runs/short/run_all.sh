#!/usr/bin/env bash
# Reference runs of bandscope (see reference_runs/short/README.md): 6 runs, two at a time,
# one torch thread each. Re-running this script resumes unfinished runs from their last checkpoint.
set -u
cd "$(dirname "$0")/../.."
BS=.venv/bin/bandscope
COMMON="--size 32 --n-train 8192 --n-test 2048 --threads 1"
run() {  # name, extra args
  local name=$1; shift
  local out=reference_runs/short/$name
  mkdir -p "$out"
  echo "$BS train $* $COMMON --out $out" > "$out/command.txt"
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 $BS train "$@" $COMMON --out "$out" >> "$out/train.log" 2>&1
  echo "exit $? $(date -u +%FT%TZ)" >> "$out/train.log"
}
CNN="--arch cnn --epochs 30"
VIT="--arch vit --vit-patch 8 --epochs 20"
( run cnn-seed45 $CNN --seed 45 --save-weights --save-recon
  run cnn-seed46 $CNN --seed 46
  run cnn-seed47 $CNN --seed 47
  run vit-seed47 $VIT --seed 47 ) &
( run vit-seed45 $VIT --seed 45
  run vit-seed46 $VIT --seed 46 ) &
wait
