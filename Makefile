# The two quick-start commands (README): `make run` and `make test`. Both set up first.
# Everything runs in a virtual environment: the active one ($VIRTUAL_ENV), else the project's .venv/,
# which `make setup` creates with `$(PY) -m venv` (python3 unless PY is given: PY=python3.12 make run;
# PY is ignored while an environment is active). Its bin/ comes first on PATH for every recipe, so that
# `snakemake`, `python` and the rules' `python -m lorarank` (and the tests' subprocesses) are that env's.
PY ?=
CORES ?= 2
# the default config's experiment: where `make run` writes and what its check reads
EXPERIMENT := $(shell sed -n 's/^experiment:[[:space:]]*\([^[:space:]#]*\).*/\1/p' config/config.yaml)
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup run test test-fast lint

setup:
	PYTHON=$(PY) bash scripts/setup.sh "$(VENV)"

# `make run`: the default workflow, then its scientific outputs against the published run's digests
# (config/published/default.json; README: "The same bits on every machine")
run: setup
	snakemake --cores $(CORES)
	python -m lorarank check-run results/$(EXPERIMENT)

test: setup
	python -m pytest --learning

# the edit loop: everything that needs neither a training job nor a Snakemake run (~90 s of CPU)
test-fast: setup
	python -m pytest -m "not train and not dag and not slurm"

# the catalog's checks: Snakemake's linter and snakefmt (both also in the suite: tests/unit/test_lint.py, test_snakefmt.py)
lint: setup
	snakemake --lint
	snakefmt --check workflow/Snakefile workflow/rules/
