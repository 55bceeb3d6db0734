# rnnlab — the command index. `make help` lists every target.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXP    ?= experiments/vanishing.yaml
ARGS   ?=
PORT   ?= 5000
SERVER_PORT ?= 5001
# pip warns once per package about this machine's local index mirrors; hide only that line
PIP_NOISE := is ignored: it is neither a file nor a directory

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: EXP=$(EXP) ARGS='key=value ...' PORT=$(PORT)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,slurm]' -c constraints.txt 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(BIN)/python -m rnnlab.model.backends.cpp  # compile the C++ BPTT loops once (cached)
	touch $@

install: $(STAMP) ## create .venv and install rnnlab with pinned deps (redone only when pyproject/constraints change)

sweep: $(STAMP) ## run a sweep: make sweep [EXP=experiments/criticality.yaml] [ARGS="train.steps=50"]
	$(BIN)/rnnlab sweep $(EXP) $(ARGS)

validate: $(STAMP) ## check an experiment file without running it
	$(BIN)/rnnlab validate $(EXP) $(ARGS)

reproduce: $(STAMP) ## sweep the published claims in experiments/reproductions/ and check their numbers; exit 1 if one fails (ARGS: NAME…, key=value)
	$(BIN)/rnnlab reproduce $(ARGS)

ui: $(STAMP) ## MLflow UI on the results/ store at http://127.0.0.1:PORT (PORT=5000)
	$(BIN)/rnnlab ui --port $(PORT)

report: $(STAMP) ## figures, report.md/.html of each experiment's grid → results/figures/<experiment>/ (ARGS: FILE, --all, --where k=v)
	$(BIN)/rnnlab report $(ARGS)

server: $(STAMP) ## MLflow tracking server on the results/ store for Ray workers and the UI: http://127.0.0.1:SERVER_PORT (5001)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(SERVER_PORT) \
	  --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db --artifacts-destination $(CURDIR)/results/artifacts \
	  --serve-artifacts --workers 1

docs-figures: $(STAMP) ## rerun the default sweeps into a temp store; refresh docs/ figures and the numbers in docs/performance.md (~3 min)
	$(BIN)/python -m rnnlab.docs_figures $(ARGS)

bench: $(STAMP) ## time exact-gradient training steps against torch.nn.RNN (writes results/bench.json)
	$(BIN)/python -m rnnlab.bench $(ARGS)

gpu-check: $(STAMP) ## on a CUDA machine: every CUDA-only test (kernels, CUDA graphs, stacks), then make bench on CUDA (ARGS: bench options)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make gpu-check needs CUDA: torch.cuda.is_available() is False here')"
	$(BIN)/python -m pytest -q -n 4 --dist loadfile -rfs -k "cuda or CUDA" tests
	$(BIN)/python -m rnnlab.bench --device cuda $(ARGS)

browser-deps: ## install Debian's chromium for the browser tests when missing (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: cannot install chromium (no root, no sudo): browser tests will be skipped"; fi; }

test: $(STAMP) browser-deps ## lint + the whole test suite (what CI runs)
	$(BIN)/ruff check rnnlab tests
	$(BIN)/python -m pytest -n 2 --dist loadfile  # two processes: most tests wait on subprocesses

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check rnnlab tests
	$(BIN)/ruff format --check rnnlab tests

clean: ## remove the environment and caches (keeps results/)
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-results: ## delete every tracked run, artifact and figure under results/
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +

.PHONY: help install sweep validate reproduce ui report docs-figures server bench gpu-check browser-deps test lint clean clean-results
