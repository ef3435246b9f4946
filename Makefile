# The two quick-start commands (README): `make run` and `make test`. Both set up first.
PY ?= python3
CORES ?= 2

.PHONY: setup run test lint

setup:
	PYTHON=$(PY) bash scripts/setup.sh

run: setup
	snakemake --cores $(CORES)

test: setup
	$(PY) -m pytest

lint: setup
	snakemake --lint
