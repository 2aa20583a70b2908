-- Every ingest and decide run is recorded, including the ones that die (qtrader/runs.py, docs/fault-injection.md).
-- A run writes its row as it starts (status running) and closes it as it ends: success | partial | failed |
-- refused, or interrupted (SIGINT / SIGTERM, on the spot). A run killed outright (kill -9, a power cut)
-- stays running until the next ingest, decide or `qtrader status` on this warehouse finds its process gone
-- (same host, pid not alive or started at another time) and marks it crashed.
CREATE TABLE IF NOT EXISTS pipeline_runs (
    run_id        VARCHAR     PRIMARY KEY,   -- decide: the decisions' run_id; ingest: the invocation's id
    flow          VARCHAR     NOT NULL,      -- ingest | decide
    flow_run_id   VARCHAR,                   -- Prefect's flow run
    interval      VARCHAR,                   -- decide: the decided interval; ingest: the interval in flight
    status        VARCHAR     NOT NULL,      -- running | success | partial | failed | refused | interrupted | crashed
    stage         VARCHAR,                   -- what it was doing last (ingest: fetch, gate, write, recorded)
    message       VARCHAR,                   -- why it ended so (the signal, the error's first line)
    host          VARCHAR     NOT NULL,
    pid           INTEGER     NOT NULL,
    pid_started   DOUBLE,                    -- the process's start time (epoch s): a reused pid is not it
    parameters    JSON,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);

-- ingest_runs.status gains interrupted and crashed: the interval in flight when the run was stopped.

-- A resumed bar (a run that died after storing its plan) sends its brackets in the order they were
-- planned, which matters for buying power. The rowid of an INSERT OR IGNORE does not keep that order
-- (DuckDB 2.0 inserts such a batch in another order), so the plan's position is stored.
ALTER TABLE decision_orders ADD COLUMN IF NOT EXISTS plan_seq INTEGER;  -- position in its bar's plan (NULL: before 012)
