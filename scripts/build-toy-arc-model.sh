#!/usr/bin/env bash
# Regenerates models/toy-arc (the model of `seal demo arc`) with the committed recipe:
# `seal arc pretrain-toy` with its defaults (seed 1, see lib/domains/arc/toy-model.ts
# DEFAULT_TOY_PRETRAIN) on 2 engine threads. The same seed and thread count give the same weights
# on the same machine type. Time: see models/toy-arc/README.md (training.json records it too).
#
#   scripts/build-toy-arc-model.sh [OUT_DIR]      (default: models/toy-arc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build-model.sh
build_model "${1:-models/toy-arc}" toy-arc node bin/seal.js arc pretrain-toy --seed 1 --threads 2
