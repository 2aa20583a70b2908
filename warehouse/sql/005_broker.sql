-- Trading: the local paper broker's books (paper_*), the system's own record of the orders it sent to the
-- configured broker (order_records), stop adjustments (exit_adjustments) and broker state synced at each
-- reconciliation (account_snapshots, position_snapshots). docs/trading.md describes every table.
-- Money and order prices are DECIMAL(18,4): the cash ledger is exact. Timestamps are UTC.

-- The paper account: one row. market_ts is the last bar the broker has been advanced to.
CREATE TABLE IF NOT EXISTS paper_account (
    account_id     VARCHAR       PRIMARY KEY,
    starting_cash  DECIMAL(18,4) NOT NULL,
    interval       VARCHAR       NOT NULL,
    market_ts      TIMESTAMPTZ,
    created_at     TIMESTAMPTZ   NOT NULL,
    updated_at     TIMESTAMPTZ   NOT NULL
);

-- Every order of every bracket: the entry (parent_id NULL) and its exit legs (parent_id = entry id).
-- A replaced stop stays as status 'replaced' with replaced_by pointing at its successor.
CREATE TABLE IF NOT EXISTS paper_orders (
    id                VARCHAR       PRIMARY KEY,
    client_order_id   VARCHAR       NOT NULL UNIQUE,
    parent_id         VARCHAR,
    symbol            VARCHAR       NOT NULL,
    side              VARCHAR       NOT NULL,   -- buy | sell
    role              VARCHAR       NOT NULL,   -- entry | take_profit | stop_loss
    type              VARCHAR       NOT NULL,   -- market | limit | stop
    qty               BIGINT        NOT NULL CHECK (qty > 0),
    limit_price       DECIMAL(18,4),
    stop_price        DECIMAL(18,4),
    time_in_force     VARCHAR       NOT NULL,
    status            VARCHAR       NOT NULL,   -- new | held | filled | canceled | replaced
    filled_qty        BIGINT        NOT NULL DEFAULT 0,
    filled_avg_price  DECIMAL(18,4),
    reserve_price     DECIMAL(18,4),            -- entry: the market price at submission (buying power held)
    submitted_at      TIMESTAMPTZ   NOT NULL,   -- market time; the order sees bars after this one
    filled_at         TIMESTAMPTZ,              -- the bar that filled it
    canceled_at       TIMESTAMPTZ,
    replaces          VARCHAR,
    replaced_by       VARCHAR,
    created_at        TIMESTAMPTZ   NOT NULL,   -- wall clock
    updated_at        TIMESTAMPTZ   NOT NULL
);

CREATE TABLE IF NOT EXISTS paper_fills (
    fill_id          VARCHAR       PRIMARY KEY,
    order_id         VARCHAR       NOT NULL,
    client_order_id  VARCHAR       NOT NULL,
    symbol           VARCHAR       NOT NULL,
    side             VARCHAR       NOT NULL,
    role             VARCHAR       NOT NULL,
    qty              BIGINT        NOT NULL CHECK (qty > 0),
    price            DECIMAL(18,4) NOT NULL,
    commission       DECIMAL(18,4) NOT NULL,
    bar_ts           TIMESTAMPTZ   NOT NULL,    -- event time: the bar it filled in
    recorded_at      TIMESTAMPTZ   NOT NULL
);

-- Cash = SUM(amount). One deposit row, then a trade and a commission row per fill.
CREATE TABLE IF NOT EXISTS paper_cash_ledger (
    entry_id     VARCHAR       PRIMARY KEY,
    ts           TIMESTAMPTZ   NOT NULL,        -- event time
    kind         VARCHAR       NOT NULL,        -- deposit | trade | commission
    amount       DECIMAL(18,4) NOT NULL,
    order_id     VARCHAR,
    fill_id      VARCHAR,
    recorded_at  TIMESTAMPTZ   NOT NULL
);

CREATE TABLE IF NOT EXISTS paper_positions (
    symbol           VARCHAR        PRIMARY KEY,
    qty              BIGINT         NOT NULL,   -- signed: < 0 short
    avg_entry_price  DECIMAL(18,6)  NOT NULL,
    updated_at       TIMESTAMPTZ    NOT NULL    -- marks come from bars at read time (the last close)
);

-- What the decision flow sent (or adopted from the broker at reconciliation), one row per bracket.
CREATE TABLE IF NOT EXISTS order_records (
    client_order_id  VARCHAR       PRIMARY KEY,
    broker           VARCHAR       NOT NULL,    -- local | alpaca
    broker_order_id  VARCHAR,
    strategy         VARCHAR,
    symbol           VARCHAR       NOT NULL,
    side             VARCHAR       NOT NULL,
    qty              BIGINT        NOT NULL,
    leg              VARCHAR,                   -- tp1 | tp2 | tp3 (NULL when adopted)
    bar_ts           TIMESTAMPTZ,               -- the decision bar
    take_profit      DECIMAL(18,4),
    stop_price       DECIMAL(18,4),
    status           VARCHAR       NOT NULL,    -- the broker's status when last synced, or missing_at_broker
    origin           VARCHAR       NOT NULL,    -- submitted | adopted
    note             VARCHAR,
    recorded_at      TIMESTAMPTZ   NOT NULL,
    updated_at       TIMESTAMPTZ   NOT NULL
);

-- Each stop move: which broker order it replaced, from what to what, and why.
CREATE TABLE IF NOT EXISTS exit_adjustments (
    replaced_order_id  VARCHAR       PRIMARY KEY,   -- an order is replaced at most once
    new_order_id       VARCHAR       NOT NULL,
    ts                 TIMESTAMPTZ   NOT NULL,      -- event time: the decision bar
    broker             VARCHAR       NOT NULL,
    symbol             VARCHAR       NOT NULL,
    client_order_id    VARCHAR,                     -- the bracket's entry
    old_stop           DECIMAL(18,4) NOT NULL,
    new_stop           DECIMAL(18,4) NOT NULL,
    rule               VARCHAR       NOT NULL,      -- breakeven_after_tp1 | ensemble_degraded | predictive_tightening
    reason             VARCHAR       NOT NULL,
    recorded_at        TIMESTAMPTZ   NOT NULL
);

CREATE TABLE IF NOT EXISTS account_snapshots (
    broker        VARCHAR       NOT NULL,
    ts            TIMESTAMPTZ   NOT NULL,
    cash          DECIMAL(18,4) NOT NULL,
    equity        DECIMAL(18,4) NOT NULL,
    buying_power  DECIMAL(18,4) NOT NULL,
    recorded_at   TIMESTAMPTZ   NOT NULL,
    PRIMARY KEY (broker, ts)
);

CREATE TABLE IF NOT EXISTS position_snapshots (
    broker           VARCHAR       NOT NULL,
    ts               TIMESTAMPTZ   NOT NULL,
    symbol           VARCHAR       NOT NULL,
    qty              BIGINT        NOT NULL,
    avg_entry_price  DECIMAL(18,6) NOT NULL,
    market_value     DECIMAL(18,4),
    recorded_at      TIMESTAMPTZ   NOT NULL,
    PRIMARY KEY (broker, ts, symbol)
);
