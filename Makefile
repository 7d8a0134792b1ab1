# The two commands of the README: `make demo` and `make test`. Both set up everything first
# (system packages, a venv over Debian's Python packages, the build) and are quick once done.
VENV := .venv
PYTHON := $(VENV)/bin/python
BUILD := build/release
INSTALLED := $(VENV)/.qwen2audio-installed
JOBS ?= $(shell nproc)

.PHONY: setup deps venv build demo test test-cpp test-python debug asan lint format tidy bench clean fuzz

setup: deps build

deps:
	@bash scripts/install-deps.sh

$(PYTHON):
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(INSTALLED): $(PYTHON) pyproject.toml setup.py
	$(PYTHON) -m pip install --no-build-isolation --no-deps --disable-pip-version-check -q -e .
	@touch $@

# After the first editable install, CMake alone rebuilds the extension in place (and the tests).
build: deps $(INSTALLED)
	cmake --build $(BUILD) -j $(JOBS)
	@ln -sf $(BUILD)/compile_commands.json compile_commands.json

demo: setup
	$(PYTHON) -m qwen2audio demo $(if $(MODEL),--model $(MODEL),)

test: setup
	ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j $(JOBS)
	$(PYTHON) -m pytest -q

test-cpp: setup
	ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j $(JOBS)

test-python: setup
	$(PYTHON) -m pytest -q

debug: deps
	cmake --preset debug && cmake --build --preset debug -j $(JOBS) && ctest --preset debug

asan: deps
	cmake --preset asan -DQWEN2AUDIO_BUILD_PYTHON=OFF && cmake --build --preset asan -j $(JOBS) && ctest --preset asan

lint: setup
	cmake --build $(BUILD) --target format-check
	cmake --build $(BUILD) --target tidy

format: setup
	cmake --build $(BUILD) --target format

clean:
	rm -rf build $(VENV) python/qwen2audio/_core*.so compile_commands.json

# Each fuzzer runs FUZZ_SECONDS (default 30) from its seed corpus; crashes land in build/fuzz/.
FUZZ_SECONDS ?= 30
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQWEN2AUDIO_BUILD_FUZZERS=ON -DQWEN2AUDIO_BUILD_TESTS=OFF -DQWEN2AUDIO_BUILD_PYTHON=OFF
	cmake --build build/fuzz -j $(JOBS)
	@for target in build/fuzz/tests/fuzz/fuzz_*; do \
	  name=$$(basename $$target | sed 's/^fuzz_//'); mkdir -p build/fuzz/corpus/$$name; \
	  echo "== $$target ($(FUZZ_SECONDS) s)"; \
	  $$target -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -artifact_prefix=build/fuzz/ \
	    build/fuzz/corpus/$$name tests/fuzz/corpus/$$name || exit 1; \
	done
