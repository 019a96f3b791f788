# Set-up commands for a fresh CPU machine:
#   make demo           create .venv, install, run VisPCO on the embedded default (trains, proposes,
#                       evaluates, compares with the committed 700-schedule grid), a few minutes
#   make test           create/use .venv, run the test suite
#   make eval-env       create .venv-eval: a second environment for the evaluation harnesses
#                       (VLMEvalKit, lmms-eval), which need torchvision; about 7 GB
#   make test-harness   create/use .venv-eval, run the harness integration tests in it
# torch is pinned to the CPU build first, so nothing downloads CUDA wheels into .venv; .venv-eval
# takes the registry's default torch and torchvision (CUDA builds, which also run on a CPU).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0

ROOT       := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
EVAL_VENV  ?= .venv-eval
EVAL_BIN   := $(EVAL_VENV)/bin
EVAL_TORCH ?= torch==2.14.1 torchvision==0.29.1
LMMS_EVAL  ?= lmms-eval==0.7.3
# a VLMEvalKit checkout (the folder holding run.py) or a source archive of one (top folder VLMEvalKit/)
VLMEVALKIT ?= $(ROOT)/../shared/vendor/VLMEvalKit-e8e78f0.tar.gz
# the harness tests fail, rather than skip, when a harness is missing
HARNESS_TESTS := tests/test_harness_vlmeval.py tests/test_harness_lmms_eval.py tests/test_scoring.py

.PHONY: demo test install eval-env test-harness

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

# -qq: errors only (this machine's pip configuration warns about every missing local index folder);
# torch and torchvision first, then pinned (pins.txt) while VLMEvalKit, lmms-eval and paretobench resolve;
# rouge-score: VLMEvalKit imports it without requiring it; filelock<4: lmms-eval 0.7.3 patches
# filelock._api, which filelock 4 removed
$(EVAL_BIN)/.eval-env: pyproject.toml
	$(PY) -m venv $(EVAL_VENV)
	$(EVAL_BIN)/pip install -qq $(EVAL_TORCH)
	$(EVAL_BIN)/pip freeze | grep -E '^(torch|torchvision)==' > $(EVAL_VENV)/pins.txt
	@rm -rf $(EVAL_VENV)/VLMEvalKit; \
	if [ -f "$(VLMEVALKIT)/run.py" ]; then ln -s "$(abspath $(VLMEVALKIT))" $(EVAL_VENV)/VLMEvalKit; \
	elif [ -f "$(VLMEVALKIT)" ]; then tar -xzf "$(VLMEVALKIT)" -C $(EVAL_VENV); \
	else echo "VLMEVALKIT=$(VLMEVALKIT): neither a VLMEvalKit checkout nor an archive of one" >&2; exit 2; fi
	$(EVAL_BIN)/pip install -qq -c $(EVAL_VENV)/pins.txt -e $(EVAL_VENV)/VLMEvalKit rouge-score \
		"$(LMMS_EVAL)" "filelock<4" -e ".[test]"
	LITELLM_LOCAL_MODEL_COST_MAP=True $(EVAL_BIN)/python -c "import torchvision, vlmeval, lmms_eval, paretobench" \
		> /dev/null
	touch $@

eval-env: $(EVAL_BIN)/.eval-env

test-harness: eval-env
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True PARETOBENCH_HARNESS=required \
		$(EVAL_BIN)/python -m pytest -q $(HARNESS_TESTS)
