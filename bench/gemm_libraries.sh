#!/usr/bin/env bash
# Compares 2-thread fp32 GEMM rates of oneDNN, OpenBLAS and BLIS on this machine
# (docs/PERFORMANCE.md, "Choosing the GEMM library"). Installs the two BLAS packages.
set -euo pipefail
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread libblis4-pthread >/dev/null
tmp=$(mktemp -d)
g++ -O2 "$(dirname "$0")/gemm_libraries.cpp" -o "$tmp/gemm_libraries" -ldnnl -ldl -fopenmp
export OMP_NUM_THREADS=${THREADS:-2} OPENBLAS_NUM_THREADS=${THREADS:-2} BLIS_NUM_THREADS=${THREADS:-2}
lib=/usr/lib/x86_64-linux-gnu
# OpenBLAS twice: with the machine's OPENBLAS_CORETYPE (if any) and with its own choice.
"$tmp/gemm_libraries" \
  "OpenBLAS(env)" "$lib/openblas-pthread/libblas.so.3" \
  "BLIS" "$lib/blis-pthread/libblas.so.3"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$tmp/gemm_libraries" \
  "OpenBLAS(auto)" "$lib/openblas-pthread/libblas.so.3"
rm -rf "$tmp"
