# `make demo` and `make test` set the environment up when needed, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo ablation

venv: $(STAMP)

# Re-installs only when the venv is missing or requirements/pyproject changed.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q tests

# The main job: synthetic H&E data (generated when absent) -> stage 1 ->
# pseudo-masks -> stage 2 -> test, printing the results table.
demo: venv
	$(PY) tools/run_pipeline.py --preset demo \
		--data-root data/synthetic_histo --work-dir work_dirs/demo

# The ablation chain (stage-1 + stage-2 pairs: cam, prototypes,
# prototypes_contrastive, full, fully_supervised), 3 seeds, on synthetic data
# with 200 val / 200 test patches; resumable (a rerun finishes what is missing).
ablation: venv
	$(PY) tools/run_pipeline.py --preset demo \
		--data-root data/synthetic_histo_ablation \
		--work-dir work_dirs/ablation \
		--synthetic num_val=200 num_test=200 --num-visualize 0 \
		--seeds 0 1 2 \
		--variants cam prototypes prototypes_contrastive full fully_supervised
