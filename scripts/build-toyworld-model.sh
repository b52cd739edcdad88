#!/usr/bin/env bash
# Regenerates models/toyworld (the embedded default model of `seal demo`) with the committed recipe:
# `seal pretrain` with its defaults (seed 1, see lib/domains/toyworld/pretrain.ts DEFAULT_PRETRAIN)
# on 2 engine threads. The same seed and thread count give the same weights on the same machine
# type. Takes about 12 minutes on a 2-core machine (see models/toyworld/README.md).
#
#   scripts/build-toyworld-model.sh [OUT_DIR]      (default: models/toyworld)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build-model.sh
build_model "${1:-models/toyworld}" toyworld node bin/seal.js pretrain --seed 1 --threads 2
