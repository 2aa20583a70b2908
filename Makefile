# Every target builds .venv from the lock when it is missing or the lock changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced
export PYTHONUNBUFFERED := 1
# One Prefect home for the CLI, the demo, the UI, the worker and `prefect` commands (qtrader/prefect_env.py).
export PREFECT_HOME ?= $(CURDIR)/data/prefect
export QTRADER_HOME ?= $(CURDIR)
PREFECT_DB := $(PREFECT_HOME)/prefect.db

PREFECT := $(VENV)/bin/prefect
UI_URL := http://127.0.0.1:4200/api
POOL := qtrader-process
# `make deploy CADENCE=compressed`: the test profile of prefect.yaml (docs/orchestration.md).
CADENCE ?= production

.PHONY: demo test lint bench venv clean ui deploy worker serve prefect-db

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

# Migrate Prefect's database once, up front: a new database takes 10-35 s to migrate on two loaded cores,
# which a temporary server's start-up (qtrader's first run) would otherwise spend inside its time-out.
$(PREFECT_DB): | $(STAMP) $(PREFECT_HOME)
	@echo "preparing Prefect's database $(PREFECT_DB) (once)"
	@$(PREFECT) --no-prompt server database upgrade -y >/dev/null

prefect-db: $(PREFECT_DB)

demo: $(STAMP) $(PREFECT_DB)
	$(VENV)/bin/qtrader demo

# The end-to-end module (a real Prefect server, worker and scheduler: ~11 min, mostly waiting for
# schedules) runs beside the rest of the suite; its output follows. Either failing fails the target,
# and so does "no tests collected" (pytest's exit 5).
E2E_LOG := data/e2e-test.log
test: $(STAMP)
	@mkdir -p data
	@$(PY) -m pytest -q tests/e2e > $(E2E_LOG) 2>&1 & e2e=$$!; \
	$(PY) -m pytest -q --durations=15 --ignore=tests/e2e; rest=$$?; \
	wait $$e2e; e2e_rc=$$?; \
	echo "---- tests/e2e (ran beside the suite above) ----"; cat $(E2E_LOG); \
	echo "suite exit $$rest, e2e exit $$e2e_rc"; \
	test $$rest -eq 0 && test $$e2e_rc -eq 0

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Each benchmark prints its figures, the targets and the machine; a missed target does not stop the rest.
bench: $(STAMP) $(PREFECT_DB)
	-$(PY) benchmarks/ingest.py
	-$(PY) benchmarks/features.py
	-$(PY) benchmarks/retrain.py
	-$(PY) benchmarks/broker_step.py
	-$(PY) benchmarks/decide.py
	-$(PY) benchmarks/orchestration.py
	-$(PY) benchmarks/startup.py
	-$(PY) benchmarks/backtest.py

# The Prefect UI (offline) on 127.0.0.1:4200, state kept in data/prefect. While it runs, qtrader commands
# run their flows on it (so they show in the UI) instead of on a temporary server.
ui: $(STAMP) $(PREFECT_DB)
	$(PREFECT) server start --host 127.0.0.1 --port 4200 --analytics-off

# Work pool and every deployment of prefect.yaml, with their schedules and triggers (needs `make ui`).
# CADENCE=compressed then swaps the schedules for the test profile (docs/orchestration.md).
# The warehouse-writer concurrency limit is created by the first write (tasks/writer.py).
deploy: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) $(PREFECT) work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(UI_URL) $(PREFECT) --no-prompt deploy --all
	PREFECT_API_URL=$(UI_URL) $(PY) -m qtrader.orchestration --cadence $(CADENCE)

# A process worker that runs the scheduled flows (each run a subprocess in this folder).
worker: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) $(PREFECT) worker start --pool $(POOL)

# Every deployment on its schedule in one process, without a pool or worker.
serve: $(STAMP) | $(PREFECT_HOME)
	PREFECT_API_URL=$(UI_URL) $(VENV)/bin/qtrader serve

clean:
	rm -rf $(VENV) data/warehouse.duckdb data/dq_docs
