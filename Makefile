# The two quick-start commands (README): `make run` and `make test`. Both set up first.
PY ?= python3
CORES ?= 2

.PHONY: setup run test test-fast lint

setup:
	PYTHON=$(PY) bash scripts/setup.sh

run: setup
	snakemake --cores $(CORES)

test: setup
	$(PY) -m pytest

# the edit loop: everything that needs neither a training job nor a Snakemake run (about a minute)
test-fast: setup
	$(PY) -m pytest -m "not train and not dag and not slurm"

lint: setup
	snakemake --lint
