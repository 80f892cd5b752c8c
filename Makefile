# The two commands: `make demo` and `make test`. Both install missing Debian
# packages (scripts/install-deps.sh), configure and build Release into build/.
BUILD_DIR ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-fast test-install sanitize tsan test-aarch64 demo clean llamacpp-deps

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The whole suite: ASan+UBSan (clang) over every test plus each fuzzer for
# TQM_FUZZ_SECONDS (default 60), ThreadSanitizer over the concurrent readers,
# the loader and the writer's parallel packing (format_test), an AArch64
# cross build's tests under qemu (test-aarch64), the installed package used
# from outside the tree (test-install), then the Release suite (its ctest
# summary is the last thing printed).
test: build sanitize tsan test-aarch64 test-install test-fast

# Only the Release suite.
test-fast: build llamacpp-deps
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# cmake --install into a temporary prefix; find_package(tqm) and pkg-config
# consumers built against it (scripts/test-install.sh).
test-install: build
	scripts/test-install.sh $(BUILD_DIR)

# node-llama-cpp (llama.cpp's CPU build, prebuilt) for the llamacpp_gguf test,
# exactly as tests/llamacpp/package-lock.json pins it, into the build
# directory: no optional packages (CUDA, Vulkan, other platforms; the
# linux-x64 CPU binary is a direct dependency), no install scripts, so
# nothing is downloaded or built beyond the locked tarballs (npm's cache first).
LLAMACPP_NODE = $(BUILD_DIR)/llamacpp-node
llamacpp-deps: $(LLAMACPP_NODE)/node_modules/.package-lock.json

$(LLAMACPP_NODE)/node_modules/.package-lock.json: tests/llamacpp/package.json tests/llamacpp/package-lock.json
	@if ! command -v npm >/dev/null || \
	    ! node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)'; then \
	  echo "make: node >= 20 with npm not found: the llamacpp_gguf test will be skipped" >&2; \
	else \
	  set -e; mkdir -p $(LLAMACPP_NODE); \
	  cp tests/llamacpp/package.json tests/llamacpp/package-lock.json $(LLAMACPP_NODE)/; \
	  cd $(LLAMACPP_NODE); \
	  echo "npm ci node-llama-cpp (tests/llamacpp/package-lock.json) in $(LLAMACPP_NODE)"; \
	  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional --ignore-scripts \
	    --prefer-offline --no-audit --no-fund; \
	  touch node_modules/.package-lock.json; \
	fi

sanitize: deps
	scripts/sanitize.sh

tsan: deps
	scripts/tsan.sh loader_test format_test

# Cross-built for AArch64 (NEON decoder, portable paths), run under qemu-user.
test-aarch64: deps
	scripts/cross-aarch64.sh

demo: build
	@scripts/demo.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
