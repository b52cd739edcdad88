#!/usr/bin/env bash
# Regenerates models/toy-arc (the model of `seal demo arc`) with the committed recipe, two stages of
# `seal arc pretrain-toy` on 2 engine threads:
#   1. from random weights with the command's defaults (seed 1, 7000 steps, lr 4e-3; see
#      lib/domains/arc/toy-model.ts DEFAULT_TOY_PRETRAIN);
#   2. continued from stage 1 on a fresh stream of the same corpus (seed 7): 4000 steps, lr 2e-3
#      with 50 warmup steps and cosine decay to 1e-4. Stage 1 alone leaves the model under-trained
#      (models/toy-arc/README.md has what each stage can do).
# The same seeds and thread count give the same weights on the same machine type. Time: see
# models/toy-arc/README.md (training.json records both stages).
#
#   scripts/build-toy-arc-model.sh [OUT_DIR]      (default: models/toy-arc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build-model.sh
STAGE1="$(scratch_dir toy-arc-stage1)"
build_model "$STAGE1" toy-arc-stage1 node bin/seal.js arc pretrain-toy --seed 1 --threads 2
build_model "${1:-models/toy-arc}" toy-arc node bin/seal.js arc pretrain-toy --init "$STAGE1" --seed 7 --steps 4000 \
  --lr 2e-3 --warmup 50 --min-lr-ratio 0.05 --threads 2
