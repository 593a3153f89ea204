#!/usr/bin/env bash
# `make demo`: what palm can do today, on the built-in defaults. Training, the tokenizer
# and generation arrive with their issues; until then the demo shows the model itself:
# the paper's sizes, a freshly initialized model, and scoring with it.
set -euo pipefail
palm=${1:-build/palm}
out=${PALM_DEMO_DIR:-out/demo}
mkdir -p "$out"

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "PaLM 540B as in the paper's Table 1 (parameters, FLOPs/token, memory)" \
  "$palm" info --preset palm-540b
step "the small preset this machine trains" "$palm" info --preset small --batch-size 8 --seq-len 256
step "a freshly initialized model (safetensors)" \
  "$palm" init --preset small --seed 1 --out "$out/small-init.safetensors"
step "log-probability of each token given its prefix (random model: about -ln(8192) = -9.0)" \
  "$palm" score --model "$out/small-init.safetensors" --tokens "17 4 99 1024 7 7 7 300"
printf '\nThe model is at %s. Speed against PyTorch on this machine: make bench.\n' \
  "$out/small-init.safetensors"
