# Every target builds .venv from the lock when it is missing or the lock changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced
export PYTHONUNBUFFERED := 1
# Keep Prefect's state (the temporary server's database) inside the project.
export PREFECT_HOME ?= $(CURDIR)/data/prefect

PREFECT := $(VENV)/bin/prefect
UI_URL := http://127.0.0.1:4200/api
POOL := qtrader-process

.PHONY: demo test lint bench venv clean ui deploy worker serve

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv==0.13.8"
	@$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

# Prefect creates its home but not the folders above it (a fresh clone has no data/ yet).
$(PREFECT_HOME):
	@mkdir -p $@

demo: $(STAMP) | $(PREFECT_HOME)
	$(VENV)/bin/qtrader demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Each benchmark prints its figures, the targets and the machine; a missed target does not stop the rest.
bench: $(STAMP) | $(PREFECT_HOME)
	-$(PY) benchmarks/ingest.py
	-$(PY) benchmarks/features.py
	-$(PY) benchmarks/retrain.py
	-$(PY) benchmarks/broker_step.py
	-$(PY) benchmarks/decide.py
	-$(PY) benchmarks/orchestration.py
	-$(PY) benchmarks/backtest.py

# The Prefect UI (offline) on 127.0.0.1:4200, state kept in data/prefect.
ui: $(STAMP) | $(PREFECT_HOME)
	$(PREFECT) server start --host 127.0.0.1 --port 4200 --analytics-off

# Work pool, the warehouse-writer concurrency limit, and every deployment of prefect.yaml (needs `make ui`).
deploy: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) $(PREFECT) work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(UI_URL) $(PREFECT) gcl create warehouse-writer --limit 1 2>/dev/null || true
	PREFECT_API_URL=$(UI_URL) QTRADER_HOME=$(CURDIR) $(PREFECT) --no-prompt deploy --all

# A process worker that runs the scheduled flows (each run a subprocess in this folder).
worker: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) QTRADER_HOME=$(CURDIR) $(PREFECT) worker start --pool $(POOL)

# Every deployment on its schedule in one process, without a pool or worker.
serve: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) $(VENV)/bin/qtrader serve

clean:
	rm -rf $(VENV) data/warehouse.duckdb data/dq_docs
