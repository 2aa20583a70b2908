-- Backtests (flows/backtest.py, docs/backtest.md): one row per (run, mode) with the seed-style metrics,
-- the closed trades of each mode and its equity curve. The replay itself runs in scratch warehouses under
-- data/backtests/<run_id>/ (one per mode, kept for SQL); only these results land here.

CREATE TABLE IF NOT EXISTS backtest_runs (
    run_id            VARCHAR      NOT NULL,
    mode              VARCHAR      NOT NULL,   -- static | adaptive | no_<enhancement> | signals
    interval          VARCHAR      NOT NULL,
    start_ts          TIMESTAMPTZ  NOT NULL,   -- first replayed bar
    end_ts            TIMESTAMPTZ  NOT NULL,   -- last replayed bar
    bars              INTEGER      NOT NULL,
    symbols           INTEGER      NOT NULL,
    overrides         VARCHAR      NOT NULL,   -- JSON: the settings this mode changed
    scratch           VARCHAR,                 -- the mode's scratch warehouse
    starting_equity   DOUBLE       NOT NULL,
    final_equity      DOUBLE       NOT NULL,
    trades            INTEGER      NOT NULL,   -- closed trades (one per decision)
    open_trades       INTEGER      NOT NULL,   -- still open at the last bar (marked to market in equity)
    win_rate          DOUBLE,
    avg_pnl_pct       DOUBLE,                  -- mean trade P&L / entry notional, after costs
    avg_pnl           DOUBLE,
    total_return      DOUBLE,
    sharpe            DOUBLE,                  -- annualised, per-bar equity returns, risk-free 0
    sortino           DOUBLE,
    max_drawdown      DOUBLE,                  -- fraction of the running peak, <= 0
    exposure          DOUBLE,                  -- mean gross position value / equity
    turnover          DOUBLE,                  -- traded notional / mean equity, annualised
    commission        DOUBLE       NOT NULL,
    refused_bars      INTEGER      NOT NULL,   -- bars the decision step refused (stale health, no champion)
    started_at        TIMESTAMPTZ  NOT NULL,
    finished_at       TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (run_id, mode)
);

CREATE TABLE IF NOT EXISTS backtest_trades (
    run_id                 VARCHAR      NOT NULL,
    mode                   VARCHAR      NOT NULL,
    decision_id            VARCHAR      NOT NULL,
    symbol                 VARCHAR      NOT NULL,
    side                   VARCHAR      NOT NULL,
    decided_at             TIMESTAMPTZ  NOT NULL,
    entry_ts               TIMESTAMPTZ  NOT NULL,
    exit_ts                TIMESTAMPTZ  NOT NULL,
    qty                    BIGINT       NOT NULL,
    entry_price            DOUBLE       NOT NULL,
    exit_price             DOUBLE       NOT NULL,
    pnl                    DOUBLE       NOT NULL,   -- after commission and slippage
    pnl_pct                DOUBLE       NOT NULL,
    r_multiple             DOUBLE,
    exit_reason            VARCHAR,                 -- the last leg's: TP1..TP3, stop, breakeven
    legs                   VARCHAR,
    consensus              VARCHAR,
    confidence_calibrated  DOUBLE,
    contributors           VARCHAR,                 -- modules that voted for it
    PRIMARY KEY (run_id, mode, decision_id)
);

CREATE TABLE IF NOT EXISTS backtest_equity (
    run_id     VARCHAR      NOT NULL,
    mode       VARCHAR      NOT NULL,
    ts         TIMESTAMPTZ  NOT NULL,
    equity     DOUBLE       NOT NULL,
    cash       DOUBLE       NOT NULL,
    gross      DOUBLE       NOT NULL,   -- gross position value at the bar's close
    drawdown   DOUBLE       NOT NULL,   -- equity / running peak - 1
    PRIMARY KEY (run_id, mode, ts)
);

-- The newest run's table, static first: what `qtrader backtest` prints.
CREATE VIEW IF NOT EXISTS v_backtest_latest AS
SELECT * FROM backtest_runs
WHERE run_id = (SELECT arg_max(run_id, started_at) FROM backtest_runs)
ORDER BY mode <> 'static', mode <> 'adaptive', mode;
