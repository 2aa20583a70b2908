-- Market bars, ingest bookkeeping, quarantine and data-quality verdicts.
-- Timestamps are UTC (TIMESTAMPTZ). Daily bars are stamped at the session date 00:00 UTC;
-- intraday bars at their start time.

CREATE TABLE IF NOT EXISTS bars (
    symbol       VARCHAR     NOT NULL,
    interval     VARCHAR     NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    open         DOUBLE      NOT NULL,
    high         DOUBLE      NOT NULL,
    low          DOUBLE      NOT NULL,
    close        DOUBLE      NOT NULL,
    volume       DOUBLE      NOT NULL,
    source       VARCHAR     NOT NULL,
    run_id       VARCHAR     NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, interval, ts)
);

CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id            VARCHAR PRIMARY KEY,
    flow_run_id       VARCHAR,
    source            VARCHAR     NOT NULL,
    interval          VARCHAR     NOT NULL,
    symbols           VARCHAR[]   NOT NULL,
    window_start      TIMESTAMPTZ,
    window_end        TIMESTAMPTZ,
    rows_in           BIGINT      NOT NULL,
    rows_written      BIGINT      NOT NULL,
    rows_quarantined  BIGINT      NOT NULL,
    symbols_failed    VARCHAR[]   NOT NULL,  -- fetch errors (unknown symbol, empty download, malformed file)
    symbols_blocked   VARCHAR[]   NOT NULL,  -- blocked by a critical series rule
    status            VARCHAR     NOT NULL,  -- success | partial | failed
    message           VARCHAR,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ NOT NULL,
    fetch_s           DOUBLE,
    gate_s            DOUBLE,
    write_s           DOUBLE
);

CREATE TABLE IF NOT EXISTS quarantine (
    run_id          VARCHAR     NOT NULL,
    stage           VARCHAR     NOT NULL,
    rule            VARCHAR     NOT NULL,
    severity        VARCHAR     NOT NULL,
    symbol          VARCHAR,
    interval        VARCHAR,
    ts              TIMESTAMPTZ,
    open            DOUBLE,
    high            DOUBLE,
    low             DOUBLE,
    close           DOUBLE,
    volume          DOUBLE,
    source          VARCHAR,
    detail          VARCHAR,
    quarantined_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS dq_results (
    run_id            VARCHAR     NOT NULL,
    stage             VARCHAR     NOT NULL,
    suite             VARCHAR     NOT NULL,
    expectation       VARCHAR     NOT NULL,  -- GX expectation type
    rule              VARCHAR     NOT NULL,  -- qtrader rule name (meta.rule in the suite)
    severity          VARCHAR     NOT NULL,
    column_name       VARCHAR,
    success           BOOLEAN     NOT NULL,
    observed_value    VARCHAR,
    element_count     BIGINT,
    unexpected_count  BIGINT,
    validated_at      TIMESTAMPTZ NOT NULL
);

CREATE VIEW IF NOT EXISTS v_bar_coverage AS
SELECT symbol, interval, count(*) AS bars, min(ts) AS first_ts, max(ts) AS last_ts,
       max(ingested_at) AS last_ingested_at
FROM bars
GROUP BY symbol, interval;
