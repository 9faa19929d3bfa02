# `make demo` and `make test` set the environment up when needed, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo ablation ablation-hard stain-robustness

venv: $(STAMP)

# Re-installs only when the venv is missing or requirements/pyproject changed.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { \
	  echo "Building $(VENV) with $$(command -v $(PYTHON)) ($$($(PYTHON) --version 2>&1)); set PYTHON=... for another"; \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' || { \
	    echo "$(PYTHON) is older than pyproject.toml's requires-python (>=3.9)" >&2; exit 1; }; \
	  $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Two pytest-xdist workers (CI has 2 cores), each test file on one worker
# so that its module fixtures run once.
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The main job: synthetic H&E data (generated when absent) -> stage 1 ->
# pseudo-masks -> stage 2 -> test, printing the results table.
demo: venv
	$(PY) tools/run_pipeline.py --preset demo \
		--data-root data/synthetic_histo --work-dir work_dirs/demo

# The ablation chain (stage-1 + stage-2 pairs: cam, prototypes,
# prototypes_contrastive, full, fully_supervised), 3 seeds, on synthetic data
# of 400 / 200 / 200 patches at 160x160 (smaller than the demo's, so that the
# 3 x 16 steps fit in about an hour on 2 cores); resumable: a rerun reuses
# the finished steps. The prototype stage 1s embed their image bank with the
# trained plain-CAM stage 1 of the same seed. `ablation-hard` runs the same
# on the harder generator setting (per-slide stains, shared textures, small
# regions, soft borders).
ABLATION_ARGS := --preset ablation --num-visualize 0 --seeds 0 1 2 \
	--synthetic num_val=200 num_test=200 size=160 \
	--stage1-options train_cfg.val_interval=300 \
	--variants cam prototypes prototypes_contrastive full fully_supervised

ablation: venv
	$(PY) tools/run_pipeline.py $(ABLATION_ARGS) \
		--data-root data/synthetic_histo_ablation \
		--work-dir work_dirs/ablation

ablation-hard: venv
	$(PY) tools/run_pipeline.py $(ABLATION_ARGS) --synthetic difficulty=hard \
		--data-root data/synthetic_histo_ablation_hard \
		--work-dir work_dirs/ablation_hard

# Stain robustness (3 seeds, the ablation's data): the full variant trained
# without stain augmentation, with HED-light (the bases' default), with
# HED-strong and with a scale-only HED jitter, each tested on the test split re-stained in HED space
# (paler, darker, H-heavy, E-heavy), without and with Macenko normalisation
# towards the stain its checkpoint carries; resumable like the ablation.
stain-robustness: venv
	$(PY) tools/run_pipeline.py --preset stain --num-visualize 0 \
		--seeds 0 1 2 --stain-norm \
		--synthetic num_val=200 num_test=200 size=160 \
		--data-root data/synthetic_histo_ablation \
		--work-dir work_dirs/stain_robustness
