# Two commands for a fresh clone:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench-store clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

## run: start the agent on the embedded default (SQLite under ./var, sample rules)
run: $(STAMP)
	$(VENV)/bin/crm-agent --config agent.example.yaml serve

## test: the whole suite (unit + real sockets + PostgreSQL when CRM_AGENT_TEST_PG is set), ruff, mypy
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider
	$(VENV)/bin/ruff check agent tests bench
	$(VENV)/bin/mypy agent bench

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench
	$(VENV)/bin/mypy agent bench

bench-store: $(STAMP)
	$(PY) bench/store_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
