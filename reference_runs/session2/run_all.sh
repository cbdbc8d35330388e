#!/usr/bin/env bash
# The session-2 reference set, superseded by ../recorded/ (see README.md here).
# Usage: run_all.sh [NAME]  (one run, e.g. cnn-seed46; all six when omitted); re-running
# resumes. The machinery is in ../lanes.sh.
CNN="--arch cnn --epochs 120 --lr 3e-3"
VIT="--arch vit --vit-patch 8 --epochs 60"
source "$(dirname "$0")/../lanes.sh"
