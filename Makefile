# Two commands do everything: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.arm-jax-installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/arm-jax run --preset demo --out results/demo

# -n auto: one pytest worker per core (pytest-xdist); XLA compiles are mostly single-threaded,
# so two workers on CI's 2 cores take the suite from ~7.5 to ~5.5 minutes.
test: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not multidevice"
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(PY) -m pytest -q -n auto -m multidevice

clean:
	rm -rf results .pytest_cache
