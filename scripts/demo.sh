#!/usr/bin/env bash
# `make demo`: palm on the built-in defaults: the paper's model sizes, a vocabulary and
# training data built from the default corpus (Debian packages), a small PaLM trained
# for a few minutes with PaLM's recipe, its loss curve, and the trained model scoring
# text and generating it (greedy and sampled).
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
rm -rf "$out/run"
step "train the small preset (6M parameters) for ~5 minutes: Adafactor, lr min(1e-2, 1/sqrt(k)), z-loss" \
  "$palm" train --preset small --data "$out/data" --out "$out/run" --steps ${PALM_DEMO_STEPS:-1000} \
  --batch-size 16 --seq-len 128 --eval-every 100 --checkpoint-every 250
step "the loss curve" "$palm" plot "$out/run"
python3 - "$out/run/metrics.jsonl" <<'PY' || true
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if "loss" in r and "event" not in r]
val = [r for r in rows if "val_loss" in r]
for r in train[:1] + train[len(train) // 2:len(train) // 2 + 1] + train[-1:]:
    print(f"  step {r['step']:5d}  tokens {r['tokens']:8d}  train loss {r['loss']:.3f}")
for r in val:
    print(f"  step {r['step']:5d}  validation loss {r['val_loss']:.3f}")
PY
step "generated text, greedy" \
  "$palm" generate --model "$out/run" --prompt "And God said" --max-tokens 40
step "generated text, sampled (temperature 0.8, top-p 0.95)" \
  "$palm" generate --model "$out/run" --prompt "def main(" --max-tokens 40 --temperature 0.8 --top-p 0.95 --seed 1
step "the trained model scores text (a random model gives about -ln(8000) = -9.0 per token)" \
  "$palm" score --model "$out/run" --text "In the beginning God created the heaven and the earth."
printf '\nData: %s\nRun: %s (checkpoints, metrics.jsonl, plot.svg, MODEL_CARD.md, DATASHEET.md; --model accepts it)\nIn a browser: %s serve --model %s, then http://127.0.0.1:8080/ (chat) and /runs (its curves and card)\nSpeed against PyTorch and llama.cpp: make bench.\n' \
  "$out/data" "$out/run" "$palm" "$out/run"
