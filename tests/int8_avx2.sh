#!/usr/bin/env bash
# int8 on CPUs without VNNI. ONNX Runtime multiplies uint8 activations by int8 weights there (AVX2, AVX-512 before
# Cascade Lake) with vpmaddubsw, which saturates; the export recipe (tools/export_model.py, INT8_RECIPES) must not
# let it. This runs the core's int8 test (crates/clip_core/tests/int8.rs) under `qemu-x86_64 -cpu Haswell`, an
# AVX2 CPU without AVX-512 or VNNI, so that ONNX Runtime takes those kernels whatever the host has:
#   - tests/fixtures/tiny-model-int8 (the exporter's recipe) must pass;
#   - tests/fixtures/tiny-model-int8-saturating (a saturating recipe: int8 weights with one scale per tensor)
#     must fail on the cosine, which shows that the emulated CPU really reaches the saturating kernels.
# The saturating fixture was written by the exporter with that recipe, and shares the tiny model's tokenizer:
#   .venv/bin/python -c 'import sys; sys.path.insert(0, "tools"); import export_model as e
#   e.INT8_RECIPES = dict.fromkeys(("text", "image"), {"weight_type": "QInt8"})
#   sys.argv[1:] = "--from-dir tests/fixtures/tiny-model --precision int8 --out OUT".split(); e.main()'
# then its towers and manifest.json were kept, with tokenizer.json a link to ../tiny-model/tokenizer.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v qemu-x86_64 >/dev/null || die "qemu-x86_64 is missing (scripts/setup.sh installs qemu-user)"
[[ -f "$ORT_LIB" ]] || die "$ORT_LIB is missing (scripts/setup.sh downloads it)"
test_binary=$(cargo test -p clip_core --test int8 --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[[ -x "$test_binary" ]] || die "cargo built no int8 test binary"

# qemu warns once per run about CPUID bits of Haswell that its emulator lacks (pcid, rtm, ...): not ours to show.
emulated() { qemu-x86_64 -cpu Haswell "$test_binary" "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2); }

log "int8 recipe on emulated AVX2 (Haswell): tests/fixtures/tiny-model-int8"
emulated

log "negative control, a saturating recipe: tests/fixtures/tiny-model-int8-saturating (must fail)"
output=$(CLIP_INT8_MODEL_DIR="$ROOT/tests/fixtures/tiny-model-int8-saturating" emulated 2>&1) &&
  die "the saturating recipe passed on emulated AVX2: ONNX Runtime did not take its non-VNNI kernels here"
failures=$(grep -c "^int8 \(text\|image\) tower: cosine against fp32 below" <<<"$output" || true)
if [[ $failures -ne 2 ]]; then
  printf '%s\n' "$output"
  die "expected both towers of the saturating recipe to fail on the cosine, $failures did"
fi
grep "^int8 .* tower: cosine" <<<"$output" >&2
log "int8 on emulated AVX2: the recipe keeps its cosine, a saturating one does not"
