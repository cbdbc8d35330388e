#!/usr/bin/env bash
# Record a set of real runs for the floor forecast's calibration or test with `bandscope train`,
# on six lanes with one torch thread each, at nice 10.
#
#   tools/record_forecast_runs.sh SET [NAME]
#
# SET is a directory below reference_runs/:
#   forecast-cnn-1k  twelve CNN runs of about 1,000 steps (seeds 50-61, batch 64/128, latent widths
#                    64/128/256, lr 2e-3 to 5e-3), data seed 0; calibration data.
#   forecast-test    twelve runs held out from the forecast method (seeds 62-73): ten CNN and two ViT,
#                    a new draw of the training patches (data seed 1), batch 64/96/128, latent widths
#                    64-256, lr 1e-3 to 5e-3, warm-up, gradient clipping and the geometric schedule on some.
# NAME records one run of SET (a directory name below), all of them on six lanes when omitted.
# Re-running resumes unfinished runs from their last checkpoint (the git-ignored state/ directory);
# finished runs return at once. BANDSCOPE names the command to use (default .venv/bin/bandscope).
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."
SET=${1:?usage: tools/record_forecast_runs.sh SET [NAME]}
BS=${BANDSCOPE:-.venv/bin/bandscope}
COMMON="--size 32 --n-train 8192 --n-test 2048 --threads 1 --no-progress"
settings() {  # the settings of one run of SET by name
  case "$SET/$1" in
    forecast-cnn-1k/cnn-b64-lr3e-3-1024steps-latent128-seed50) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --seed 50" ;;
    forecast-cnn-1k/cnn-b64-lr3e-3-1024steps-latent64-seed51) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 64 --seed 51" ;;
    forecast-cnn-1k/cnn-b64-lr2e-3-1024steps-latent128-seed52) echo "--arch cnn --batch-size 64 --lr 2e-3 --epochs 8 --latent-dim 128 --seed 52" ;;
    forecast-cnn-1k/cnn-b64-lr5e-3-1024steps-latent64-seed53) echo "--arch cnn --batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 64 --seed 53" ;;
    forecast-cnn-1k/cnn-b128-lr3e-3-960steps-latent128-seed54) echo "--arch cnn --batch-size 128 --lr 3e-3 --epochs 15 --latent-dim 128 --seed 54" ;;
    forecast-cnn-1k/cnn-b128-lr5e-3-960steps-latent64-seed55) echo "--arch cnn --batch-size 128 --lr 5e-3 --epochs 15 --latent-dim 64 --seed 55" ;;
    forecast-cnn-1k/cnn-b64-lr5e-3-1024steps-latent128-seed56) echo "--arch cnn --batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 128 --seed 56" ;;
    forecast-cnn-1k/cnn-b64-lr2e-3-1024steps-latent256-seed57) echo "--arch cnn --batch-size 64 --lr 2e-3 --epochs 8 --latent-dim 256 --seed 57" ;;
    forecast-cnn-1k/cnn-b64-lr3e-3-1024steps-latent256-seed58) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 256 --seed 58" ;;
    forecast-cnn-1k/cnn-b64-lr4e-3-1024steps-latent128-seed59) echo "--arch cnn --batch-size 64 --lr 4e-3 --epochs 8 --latent-dim 128 --seed 59" ;;
    forecast-cnn-1k/cnn-b64-lr3e-3-1024steps-latent128-seed60) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --seed 60" ;;
    forecast-cnn-1k/cnn-b64-lr5e-3-1024steps-latent256-seed61) echo "--arch cnn --batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 256 --seed 61" ;;
    forecast-test/cnn-b64-lr3e-3-1024steps-latent128-geometric-seed62) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --schedule geometric --n-points 60 --seed 62 --data-seed 1" ;;
    forecast-test/cnn-b64-lr2e-3-1024steps-latent64-seed63) echo "--arch cnn --batch-size 64 --lr 2e-3 --epochs 8 --latent-dim 64 --seed 63 --data-seed 1" ;;
    forecast-test/cnn-b128-lr4e-3-1024steps-latent128-warmup100-seed64) echo "--arch cnn --batch-size 128 --lr 4e-3 --epochs 16 --latent-dim 128 --warmup-steps 100 --seed 64 --data-seed 1" ;;
    forecast-test/cnn-b64-lr5e-3-1024steps-latent192-clip1-seed65) echo "--arch cnn --batch-size 64 --lr 5e-3 --epochs 8 --latent-dim 192 --grad-clip 1.0 --seed 65 --data-seed 1" ;;
    forecast-test/cnn-b96-lr3e-3-1020steps-latent96-seed66) echo "--arch cnn --batch-size 96 --lr 3e-3 --epochs 12 --latent-dim 96 --seed 66 --data-seed 1" ;;
    forecast-test/cnn-b64-lr1.5e-3-1280steps-latent128-seed67) echo "--arch cnn --batch-size 64 --lr 1.5e-3 --epochs 10 --latent-dim 128 --seed 67 --data-seed 1" ;;
    forecast-test/cnn-b128-lr3e-3-1024steps-latent256-geometric-seed68) echo "--arch cnn --batch-size 128 --lr 3e-3 --epochs 16 --latent-dim 256 --schedule geometric --n-points 60 --seed 68 --data-seed 1" ;;
    forecast-test/cnn-b64-lr4e-3-1024steps-latent64-warmup50-seed69) echo "--arch cnn --batch-size 64 --lr 4e-3 --epochs 8 --latent-dim 64 --warmup-steps 50 --seed 69 --data-seed 1" ;;
    forecast-test/cnn-b64-lr3e-3-1024steps-latent128-seed70) echo "--arch cnn --batch-size 64 --lr 3e-3 --epochs 8 --latent-dim 128 --seed 70 --data-seed 1" ;;
    forecast-test/cnn-b64-lr2.5e-3-1024steps-latent256-seed71) echo "--arch cnn --batch-size 64 --lr 2.5e-3 --epochs 8 --latent-dim 256 --seed 71 --data-seed 1" ;;
    forecast-test/vit-b64-lr1e-3-1536steps-warmup100-seed72) echo "--arch vit --vit-patch 8 --batch-size 64 --lr 1e-3 --epochs 12 --warmup-steps 100 --seed 72 --data-seed 1" ;;
    forecast-test/vit-b128-lr1e-3-1536steps-warmup100-seed73) echo "--arch vit --vit-patch 8 --batch-size 128 --lr 1e-3 --epochs 24 --warmup-steps 100 --seed 73 --data-seed 1" ;;
    *) return 2 ;;
  esac
}
one() {
  local name=$1 args
  args=$(settings "$name") || { echo "unknown run $SET/$name" >&2; return 2; }
  local out=reference_runs/$SET/$name
  mkdir -p "$out"
  echo "$BS train $args $COMMON --out $out" > "$out/command.txt"
  echo "start $(date -u +%FT%TZ)" >> "$out/train.log"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 nice -n 10 $BS train $args $COMMON --out "$out" >> "$out/train.log" 2>&1
  echo "exit $? $(date -u +%FT%TZ)" >> "$out/train.log"
}
lane() { for name in "$@"; do "$SELF" "$SET" "$name"; done; }
case "$SET/${2:-all}" in
  forecast-cnn-1k/all)
       lane cnn-b64-lr3e-3-1024steps-latent128-seed50 cnn-b64-lr5e-3-1024steps-latent128-seed56 &
       lane cnn-b64-lr3e-3-1024steps-latent64-seed51 cnn-b64-lr2e-3-1024steps-latent256-seed57 &
       lane cnn-b64-lr2e-3-1024steps-latent128-seed52 cnn-b64-lr3e-3-1024steps-latent256-seed58 &
       lane cnn-b64-lr5e-3-1024steps-latent64-seed53 cnn-b64-lr4e-3-1024steps-latent128-seed59 &
       lane cnn-b128-lr3e-3-960steps-latent128-seed54 cnn-b64-lr3e-3-1024steps-latent128-seed60 &
       lane cnn-b128-lr5e-3-960steps-latent64-seed55 cnn-b64-lr5e-3-1024steps-latent256-seed61 &
       wait ;;
  forecast-test/all)
       lane vit-b64-lr1e-3-1536steps-warmup100-seed72 cnn-b64-lr3e-3-1024steps-latent128-seed70 &
       lane vit-b128-lr1e-3-1536steps-warmup100-seed73 cnn-b64-lr2.5e-3-1024steps-latent256-seed71 &
       lane cnn-b64-lr3e-3-1024steps-latent128-geometric-seed62 cnn-b64-lr2e-3-1024steps-latent64-seed63 &
       lane cnn-b128-lr4e-3-1024steps-latent128-warmup100-seed64 cnn-b64-lr5e-3-1024steps-latent192-clip1-seed65 &
       lane cnn-b96-lr3e-3-1020steps-latent96-seed66 cnn-b64-lr1.5e-3-1280steps-latent128-seed67 &
       lane cnn-b128-lr3e-3-1024steps-latent256-geometric-seed68 cnn-b64-lr4e-3-1024steps-latent64-warmup50-seed69 &
       wait ;;
  */all) echo "unknown set $SET" >&2; exit 2 ;;
  *) one "$2" ;;
esac
