# Shared by scripts/build-*-model.sh: runs a pretraining command into a scratch directory, copies the
# model files (not the checkpoints) to OUT_DIR and reports the wall time.
#   build_model OUT_DIR NAME COMMAND...   (COMMAND gets --out SCRATCH_DIR appended)
#   scratch_dir NAME                      (prints a new directory removed when the script exits)

# Global, not local: the EXIT trap runs after the functions have returned.
BUILD_MODEL_SCRATCH=()
trap 'rm -rf "${BUILD_MODEL_SCRATCH[@]}"' EXIT

scratch_dir() {
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  BUILD_MODEL_SCRATCH+=("$dir")
  echo "$dir"
}

build_model() {
  local out="$1" name="$2"
  shift 2
  local work start end
  work="$(mktemp -d "${TMPDIR:-/tmp}/${name}-build.XXXXXX")"
  BUILD_MODEL_SCRATCH+=("$work")
  start=$(date +%s)
  "$@" --out "$work/model"
  end=$(date +%s)
  mkdir -p "$out"
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json training.json; do
    cp "$work/model/$f" "$out/$f"
  done
  echo "wrote $out in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s ($(du -sh "$out" | cut -f1))"
}
