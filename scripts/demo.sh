#!/usr/bin/env bash
# `make demo`: what palm does today, on the built-in defaults: the paper's model sizes,
# a vocabulary and training data built from the default corpus (Debian packages), and a
# model scoring text. Training and generation arrive with their issues.
set -euo pipefail
palm=${1:-build/palm}
out=${PALM_DEMO_DIR:-out/demo}
mkdir -p "$out"

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "PaLM 540B as in the paper's Table 1 (parameters, FLOPs/token, memory)" \
  "$palm" info --preset palm-540b
if [ ! -f "$out/data/manifest.json" ]; then
  rm -rf "$out/data"
  step "the default corpus -> a lossless 8000-piece vocabulary and deduplicated token shards" \
    "$palm" data build --default --max-mb 20 --out "$out/data"
fi
step "what the data holds, and the epochs 10M training tokens would imply" \
  "$palm" data info "$out/data" --tokens 1e7
step "the vocabulary: byte fallback, one token per digit, whitespace kept" \
  "$palm" tokenizer info --tokenizer "$out/data/tokenizer"
step "a freshly initialized small model for that vocabulary" \
  "$palm" init --preset small --seed 1 --tokenizer "$out/data/tokenizer" --out "$out/small-init.safetensors"
step "log-probability of each token of a text (random model: about -ln(8000) = -9.0)" \
  "$palm" score --model "$out/small-init.safetensors" --tokenizer "$out/data/tokenizer" \
  --text "In the beginning God created the heaven and the earth."
printf '\nData: %s   model: %s\nSpeed against PyTorch on this machine: make bench.\n' \
  "$out/data" "$out/small-init.safetensors"
