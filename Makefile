# One entry point for set-up, the study and the tests. Every target sets up what it needs.
#   make study   - set up from nothing, then run the whole study on the embedded CPU default (EuroSAT):
#                  K in {1, 2, 4, 8, 16} x seeds {1, 2, 3}, two local workers (fp32: about 2.5 h on 2
#                  cores; the seed-1 slice took 48.7 min, README "Results"), then the long-tailed grid
#                  (profile cpu-longtail: ratios 4 and 16 at K = 16, remedies, 3 seeds; README "The long tail")
#   make study-quick - the same for one cell only (K=16, seed 1)
#   make test    - set up from nothing (incl. Chromium for the browser test), then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= cpu
DATASET ?= eurosat
DATA_ROOT ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup study study-quick test test-fast browser-deps build-embedded notebooks notebooks-clean clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lowres-clip)"
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the JupyterLab browser test (Playwright drives the system executable;
# browser downloads fail on machines without internet).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

build-embedded: setup
	$(PY) -m lowres_clip.cli build-embedded

# The balanced grid, then (when the profile has one, e.g. cpu-longtail) the long-tailed grid.
LONGTAIL_PROFILE := $(if $(wildcard lib/lowres_clip/profiles/$(PROFILE)-longtail.yaml),$(PROFILE)-longtail,)
study: setup
	$(PY) -m lowres_clip.study --profile $(PROFILE) --dataset $(DATASET) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)
	$(if $(LONGTAIL_PROFILE),$(PY) -m lowres_clip.study --profile $(LONGTAIL_PROFILE) --dataset $(DATASET) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),),)

study-quick: setup
	$(PY) -m lowres_clip.study --profile $(PROFILE) --dataset $(DATASET) --shots 16 --seeds 1 $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

test: setup browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the browser test (no Chromium needed).
test-fast: setup
	$(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

# Sync each notebooks/NN_name.py with its paired .ipynb (the newer of the two gives the cells; the
# .ipynb keeps its outputs and cell ids), then strip the outputs. Run after editing either file.
notebooks: setup
	$(PY) -m jupytext --sync notebooks/[0-9]*.py
	$(PY) -m lowres_clip.cli strip-notebooks notebooks/*.ipynb

notebooks-clean: notebooks

# Committed results: copy the study's records to figures/records/ and regenerate the tables and the
# README's results block from them; reproduce reruns every committed record and prints old vs new.
results: setup
	$(PY) -m lowres_clip.results publish --dataset $(DATASET)
	$(PY) -m lowres_clip.results render --dataset $(DATASET)

reproduce: setup
	$(PY) -m lowres_clip.results reproduce --dataset $(DATASET)

clean-runs:
	rm -rf runs
