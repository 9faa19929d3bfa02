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

# The four ablation variants on the same data and pseudo-masks.
ablation: venv
	$(PY) tools/run_pipeline.py --preset demo \
		--data-root data/synthetic_histo --work-dir work_dirs/ablation \
		--variants no_prototypes prototypes_no_contrastive full fully_supervised
