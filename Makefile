# Koalarization: the two commands a newcomer needs are `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.koala-installed
# tensorflow-cpu installs much faster where no GPU is wanted; use `make install TF_EXTRA=tf` for the GPU build.
TF_EXTRA ?= tf-cpu

export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: install demo test lint unit notebooks e2e bench strip clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(TF_EXTRA),dev,notebooks]"
	touch $(STAMP)

install: $(STAMP)

## demo: colorize the bundled historical photos and write outputs/demo_gallery.png
demo: $(STAMP)
	$(PY) scripts/demo.py

## test: ruff, the unit tests, then every notebook under nbval in quick mode
test: lint unit notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) notebooks/strip_outputs.py --check

unit: $(STAMP)
	$(PY) -m pytest tests -q

notebooks: $(STAMP)
	KOALA_QUICK=1 $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

## e2e: notebooks 01, 05 and 06 in a real JupyterLab, clicked through in headless Chromium (installs Chromium and
## Playwright if missing; E2E_HEADED=1 shows the browser); screenshots in outputs/e2e/
e2e: $(STAMP)
	bash tests/e2e/install.sh $(PY)
	KOALA_QUICK=1 $(PY) -m pytest tests/e2e -q -p no:cacheprovider

## bench: the four CPU benchmarks, one table (see README, Performance)
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

## strip: remove notebook outputs except the small cells nbval checks
strip: $(STAMP)
	$(PY) notebooks/strip_outputs.py

clean:
	rm -rf outputs notebooks/outputs .pytest_cache
