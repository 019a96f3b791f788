# Two set-up commands for a fresh CPU machine:
#   make demo   create .venv, install, run VisPCO on the embedded default (trains, proposes,
#               evaluates, compares with the committed 700-schedule grid), a few minutes
#   make test   create/use .venv, run the test suite
# torch is pinned to the CPU build first, so nothing downloads CUDA wheels.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0

.PHONY: demo test install

$(BIN)/paretobench: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/paretobench

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/paretobench run --searcher vispco --pruner fastv --limit 64 \
		--vs results/search/grid-fastv-51315e73

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
