#!/usr/bin/env bash
# Regenerates models/toy-arc (the model of `seal demo arc`) with the committed recipe:
# `seal arc pretrain-toy` with its defaults (seed 1, see lib/domains/arc/toy-model.ts
# DEFAULT_TOY_PRETRAIN) on 2 engine threads. The same seed and thread count give the same weights
# on the same machine type. Time: see models/toy-arc/README.md (training.json records it too).
#
#   scripts/build-toy-arc-model.sh [OUT_DIR]      (default: models/toy-arc)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/toy-arc}"
work="$(mktemp -d "${TMPDIR:-/tmp}/toy-arc-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
node bin/seal.js arc pretrain-toy --out "$work/model" --seed 1 --threads 2
end=$(date +%s)

mkdir -p "$out"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json training.json; do
  cp "$work/model/$f" "$out/$f"
done
echo "wrote $out in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s ($(du -sh "$out" | cut -f1))"
