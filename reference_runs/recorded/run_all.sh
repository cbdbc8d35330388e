#!/usr/bin/env bash
# The reference set (recorded as reference_runs/next/ in sessions 3-5; see README.md here).
# Usage: run_all.sh [NAME]  (one run, e.g. cnn-seed46; all six when omitted); re-running
# resumes. The machinery is in ../lanes.sh.
CNN="--arch cnn --epochs 360 --lr 1e-3"
VIT="--arch vit --vit-patch 8 --epochs 240"
source "$(dirname "$0")/../lanes.sh"
