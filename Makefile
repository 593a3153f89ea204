# Thin wrapper over CMake/CTest. Every target installs what is missing first, so each
# works on a fresh Debian 12 machine as root.
BUILD ?= build
JOBS ?= $(shell nproc)

CUDA_BUILD ?= build-cuda
NVCC ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))

.PHONY: deps build build-cuda python test test-cuda demo bench clean check-fresh check-packages

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Both backends in one palm binary (the CUDA toolkit must be installed; a GPU need not be).
build-cuda: deps
	@test -n "$(NVCC)" || { echo "make build-cuda: no CUDA toolkit found (nvcc: not in /usr/local/cuda/bin or on PATH)" >&2; exit 1; }
	@cmake -S . -B $(CUDA_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPALM_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) >/dev/null
	@cmake --build $(CUDA_BUILD) -j $(JOBS)

# import palm: the extension in $(BUILD)/python (PYTHONPATH=$(BUILD)/python, or
# pip install --no-build-isolation ./python into a venv; docs/python.md)
python: build
	@cmake --build $(BUILD) -j $(JOBS) --target palm_python

test: python
	@$(MAKE) --no-print-directory test-cuda
	@cd $(BUILD) && ctest --output-on-failure -j 1

# The CUDA backend compiled (so it cannot rot) and its op and model tests run in that
# build on every backend usable here: the CPU cases always (the CUDA build's own CPU
# path), the CUDA cases where a GPU is (without one they are not instantiated, so none
# is ever reported skipped). CI must have the toolkit; elsewhere its absence is reported.
CUDA_TESTS = test_kernels test_attention_decode test_backend_ops test_model test_device_comm
test-cuda: deps
	@if [ -z "$(NVCC)" ]; then \
	  if [ "$$CI" = true ]; then echo "make test-cuda: CI must compile the CUDA backend, but no CUDA toolkit (nvcc) is installed" >&2; exit 1; fi; \
	  echo "make test-cuda: skipped: no CUDA toolkit (nvcc) on this machine"; exit 0; fi; \
	cmake -S . -B $(CUDA_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPALM_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) >/dev/null && \
	cmake --build $(CUDA_BUILD) -j $(JOBS) --target $(CUDA_TESTS) && \
	cd $(CUDA_BUILD) && ctest --output-on-failure -j 1 -L every_backend

demo: build
	@bash scripts/demo.sh $(BUILD)/palm

bench: build
	@$(BUILD)/palm bench train --preset bench-small
	@$(BUILD)/palm bench train --preset bench-medium
	@$(BUILD)/palm bench generate --preset bench-medium --prompt 512 --compare-llama-cpp

# The quick start in a clean Debian 12 root (debootstrap): only git and a clone of HEAD.
check-fresh:
	@bash scripts/check-fresh.sh

# Every file the build took from the system belongs to a package install-deps names.
check-packages: build
	@/usr/bin/python3 tools/check_packages.py $(BUILD)

clean:
	rm -rf $(BUILD) $(CUDA_BUILD)
