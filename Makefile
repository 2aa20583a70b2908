# Every target builds .venv from the lock when it is missing or the lock changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced
export PYTHONUNBUFFERED := 1
# Keep Prefect's state (the temporary server's database) inside the project.
export PREFECT_HOME ?= $(CURDIR)/data/prefect

.PHONY: demo test lint bench venv clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv==0.13.8"
	@$(VENV)/bin/uv pip sync -q --python $(PY) requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qtrader demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) data/warehouse.duckdb data/dq_docs
