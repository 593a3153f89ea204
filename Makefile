# Thin wrapper over CMake/CTest. Every target installs what is missing first, so each
# works on a fresh Debian 12 machine as root.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: deps build test demo bench clean check-fresh check-packages

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 1

demo: build
	@bash scripts/demo.sh $(BUILD)/palm

bench: build
	@$(BUILD)/palm bench train --preset bench-small
	@$(BUILD)/palm bench train --preset bench-medium

# The quick start in a clean Debian 12 root (debootstrap): only git and a clone of HEAD.
check-fresh:
	@bash scripts/check-fresh.sh

# Every file the build took from the system belongs to a package install-deps names.
check-packages: build
	@/usr/bin/python3 tools/check_packages.py $(BUILD)

clean:
	rm -rf $(BUILD)
