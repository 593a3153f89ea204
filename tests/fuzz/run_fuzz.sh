#!/usr/bin/env bash
# Builds the tokenizer fuzz target with clang (libFuzzer + AddressSanitizer) and runs it
# for a short time against a small tokenizer trained by build/palm.
# Usage: run_fuzz.sh BUILD_DIR [SECONDS]
set -euo pipefail
build=$(cd "$1" && pwd)
seconds=${2:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$build/fuzz"
mkdir -p "$work"
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address -I"$root/src" \
  "$root/tests/fuzz/fuzz_tokenizer.cpp" "$root/src/tokenizer/tokenizer.cpp" \
  "$root/src/base/check.cpp" "$root/src/base/file_util.cpp" "$root/src/base/sha256.cpp" \
  "$root/src/base/utf8.cpp" -lsentencepiece -o "$work/fuzz_tokenizer"
if [ ! -d "$work/tok" ]; then
  "$build/palm" tokenizer train --input /usr/lib/python3.11/json/ --input /usr/share/games/fortunes/de/ \
    --vocab-size 600 --max-sentences 5000 --out "$work/tok" >/dev/null 2>&1
fi
mkdir -p "$work/corpus"
printf 'hello  world\n\t123.5 \xe2\x96\x81 \xf0\x9f\x99\x82' > "$work/corpus/seed1"
printf '\xc3\x28 invalid' > "$work/corpus/seed2"
PALM_FUZZ_TOKENIZER="$work/tok" "$work/fuzz_tokenizer" "$work/corpus" \
  -max_total_time="$seconds" -max_len=512 -print_final_stats=1 2>&1 | tail -5
