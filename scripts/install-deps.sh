#!/usr/bin/env bash
# Installs every Debian package palm needs to build, test and benchmark.
# Idempotent and non-interactive: runs `apt-get update` only when something is missing.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ make pkg-config
  # libraries (DESIGN.md section 4)
  # oneDNN's CMake config requires OpenCL (a Recommends of libdnnl-dev, so name it)
  libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev libcli11-dev libfmt-dev libsentencepiece-dev sentencepiece
  libicu-dev libboost-dev libopenmpi-dev openmpi-bin
  # two "hosts" for the scale-out test: network namespaces joined by a veth pair
  iproute2
  # palm launch under a real Slurm (tests/launch_slurm.sh starts a one-node cluster)
  slurm-wlm munge
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  # real multilingual text and code for tokenizer tests (and the default corpus)
  fortunes fortunes-de fortunes-es fortunes-ru fortunes-zh fortunes-it fortunes-pl fortunes-cs fortunes-br
  python3.11 bible-kjv jargon-text perl-doc
  # independent numerical oracle (tools/palm_ref.py) and its well-configured runtime
  python3 python3-torch python3-numpy libtcmalloc-minimal4 libopenblas0-pthread
  # the Python package (import palm): pybind11, and pytest for its tests
  pybind11-dev python3-pybind11 python3-pytest python3-dev python3-pip
  # the web pages' tests: Playwright (tests/js) drives Debian's headless Chromium
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js runs the independent clients of the tests (tests/js): any installed node/npm
# will do (this machine's may come from NodeSource), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

# The npm packages, pinned by package-lock.json, fetched once: web/ (the pages' chart,
# markdown and sanitizer code, embedded in palm at build time), tests/js (the tests'
# independent clients and the browser driver) and bench/llama_cpp (llama.cpp, prebuilt
# for linux-x64, for palm bench generate --compare-llama-cpp; --omit=optional keeps its
# CUDA and Vulkan builds, hundreds of MB, off the machine).
install_js() {
  local js
  for js in "$(dirname "$0")/../web" "$(dirname "$0")/../tests/js" "$(dirname "$0")/../bench/llama_cpp"; do
    if [ ! -d "$js/node_modules" ] || [ "$js/package-lock.json" -nt "$js/node_modules" ]; then
      echo "install-deps: npm ci in ${js#*/../}" >&2
      (cd "$js" && npm ci --omit=optional --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules)
    fi
  done
}

if [ ${#missing[@]} -eq 0 ]; then
  install_js
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_js
