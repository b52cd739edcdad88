#!/usr/bin/env bash
# Regenerates models/toyworld (the embedded default model of `seal demo`) with the committed recipe:
# `seal pretrain` with its defaults (seed 1, see lib/domains/toyworld/pretrain.ts DEFAULT_PRETRAIN)
# on 2 engine threads. The same seed and thread count give the same weights on the same machine
# type. Takes about 12 minutes on a 2-core machine (see models/toyworld/README.md).
#
#   scripts/build-toyworld-model.sh [OUT_DIR]      (default: models/toyworld)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/toyworld}"
work="$(mktemp -d "${TMPDIR:-/tmp}/toyworld-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
node bin/seal.js pretrain --out "$work/model" --seed 1 --threads 2
end=$(date +%s)

mkdir -p "$out"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json training.json; do
  cp "$work/model/$f" "$out/$f"
done
echo "wrote $out in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s ($(du -sh "$out" | cut -f1))"
