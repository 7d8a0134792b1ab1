# The two commands of the README: `make demo` and `make test`. Both set up everything first
# (system packages, a venv over Debian's Python packages, the build, the notebook's Jupyter kernel)
# and are quick once done.
VENV := .venv
PYTHON := $(VENV)/bin/python
BUILD := build/release
INSTALLED := $(VENV)/.qwen2audio-installed
KERNEL := $(VENV)/share/jupyter/kernels/qwen2audio/kernel.json
JOBS ?= $(shell nproc)

.PHONY: setup deps venv build kernel notebook demo test test-cpp test-python debug asan lint format tidy bench clean fuzz sanitize

setup: deps build kernel

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

# The Jupyter kernel "qwen2audio (.venv)": the venv's Python, which notebooks/quickstart.ipynb names as its
# kernel (a plain `python3` kernel is the system interpreter, without the package).
kernel: $(KERNEL)

$(KERNEL): | deps $(PYTHON)
	$(PYTHON) -m ipykernel install --sys-prefix --name qwen2audio --display-name "qwen2audio (.venv)"

# Jupyter itself (Debian's jupyter-notebook, installed on first use), started with the venv's Python so it
# finds the kernel above; NOTEBOOK_ARGS="--no-browser --port 8889" and the like pass through.
notebook: setup
	@bash scripts/install-deps.sh notebook
	$(PYTHON) -m notebook $(NOTEBOOK_ARGS) notebooks/quickstart.ipynb

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

# Each fuzzer runs FUZZ_SECONDS (default 30) from its seed corpus (tests/fuzz/corpus/<name>, made by
# tests/fuzz/make_seeds.py) after the saved regressions replay; crashes land in build/fuzz/.
FUZZ_SECONDS ?= 30
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQWEN2AUDIO_BUILD_FUZZERS=ON -DQWEN2AUDIO_BUILD_TESTS=OFF -DQWEN2AUDIO_BUILD_PYTHON=OFF
	cmake --build build/fuzz -j $(JOBS)
	ctest --test-dir build/fuzz --output-on-failure  # replays tests/fuzz/regressions/<name>/
	@for target in build/fuzz/tests/fuzz/fuzz_*; do \
	  name=$$(basename $$target | sed 's/^fuzz_//'); mkdir -p build/fuzz/corpus/$$name; \
	  echo "== $$target ($(FUZZ_SECONDS) s)"; \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp $$target -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=65536 -close_fd_mask=2 -artifact_prefix=build/fuzz/ build/fuzz/corpus/$$name tests/fuzz/corpus/$$name \
	    || exit 1; \
	done

# ASan + UBSan build of the engine, the C++ tests and the Python module (SANITIZE_BUILD; -O1 as ASan advises,
# asserts on, about half the compile time of -O3), then ctest and a fast pytest subset (SANITIZE_TESTS) on the
# tiny checkpoint. Python itself is not instrumented, so the ASan runtime is preloaded into it, with libstdc++
# (python3 does not link it, and ASan must find the real __cxa_throw at start-up or every C++ throw aborts);
# leak checking is off there (the interpreter keeps objects alive to exit).
SANITIZE_BUILD ?= build/asan
SANITIZE_TESTS ?= tests/python/test_hardening.py tests/python/test_concurrency.py tests/python/test_checkpoint.py \
  tests/python/test_audio.py tests/python/test_tokenizer.py tests/python/test_processor.py tests/python/test_model.py
# On AMX CPUs the uncapped runs take AMX's prefill; avx512_bf16 then runs the VNNI one it replaces.
# avx512_vnni and avx2_vnni (the integer panels of CPUs with VNNI but not BF16) where the CPU has them.
SANITIZE_CAPS ?= $(if $(shell grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && echo amx),avx512_bf16) \
  $(if $(shell grep -qw avx512_vnni /proc/cpuinfo 2>/dev/null && echo vnni),avx512_vnni) avx512 \
  $(if $(shell grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && echo vnni),avx2_vnni) avx2 scalar
SANITIZE_CAPPED_TESTS ?= tests/python/test_model.py tests/python/test_quantization.py tests/python/test_ultravox.py
sanitize: deps $(INSTALLED)
	cmake -S . -B $(SANITIZE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g" -DQWEN2AUDIO_SANITIZE=ON \
	  -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF -DQWEN2AUDIO_BUILD_PYTHON=ON \
	  -DQWEN2AUDIO_PYTHON_OUTPUT_DIR=$(abspath $(SANITIZE_BUILD))/py
	cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	ctest --test-dir $(SANITIZE_BUILD) --output-on-failure --no-tests=error -j $(JOBS)
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 QWEN2AUDIO_CORE_DIR=$(SANITIZE_BUILD)/py \
	  $(PYTHON) -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS)
	@# The kernel tests run every tier the CPU has by name; the paths picked by the best tier (dispatch,
	@# the model's kernels) run again under each lower cap (a cap above the CPU's best changes nothing).
	@for cap in $(SANITIZE_CAPS); do \
	  echo "== QWEN2AUDIO_MAX_ISA=$$cap"; \
	  QWEN2AUDIO_MAX_ISA=$$cap UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(SANITIZE_BUILD)/tests/cpp/qwen2audio_tests --gtest_brief=1 || exit 1; \
	  QWEN2AUDIO_MAX_ISA=$$cap LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    QWEN2AUDIO_CORE_DIR=$(SANITIZE_BUILD)/py $(PYTHON) -m pytest -q -p no:cacheprovider $(SANITIZE_CAPPED_TESTS) || exit 1; \
	done
