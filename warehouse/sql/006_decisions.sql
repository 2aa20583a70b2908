-- The decision flow (flows/decide.py): every candidate and why it was or was not traded (decisions), the
-- brackets each accepted decision sent (decision_orders), the configured broker's fills (broker_fills),
-- and the account review views. docs/warehouse.md has example queries; docs/trading.md the rules.

-- One row per (bar, symbol) the flow looked at: the inputs, the verdict and the orders it led to.
-- A re-run of the same bar keeps the first row (ON CONFLICT DO NOTHING): the reason a trade was taken
-- is not overwritten by the re-run's "order_pending".
CREATE TABLE IF NOT EXISTS decisions (
    decision_id            VARCHAR     PRIMARY KEY,   -- strategy|interval|symbol|UTC bar time
    ts                     TIMESTAMPTZ NOT NULL,      -- the decision bar (event time)
    interval               VARCHAR     NOT NULL,
    symbol                 VARCHAR     NOT NULL,
    strategy               VARCHAR     NOT NULL,
    broker                 VARCHAR     NOT NULL,
    side                   VARCHAR,                   -- buy | sell (NULL: no direction)
    direction              SMALLINT    NOT NULL,      -- +1, -1, 0
    consensus              VARCHAR     NOT NULL,      -- UNANIMOUS | STRONG | WEAK | SPLIT | NONE
    voters                 INTEGER     NOT NULL,
    agree                  INTEGER     NOT NULL,
    contributors           VARCHAR,                   -- the agreeing modules, comma-separated
    module_p_up            JSON,                      -- {module: {p_up, p_up_calibrated, version}}
    source_module          VARCHAR     NOT NULL,      -- the module the signal is attributed to (ensemble)
    model_version          INTEGER,                   -- its champion version
    calibration            VARCHAR,                   -- seed | isotonic | sigmoid | none
    confidence_raw         DOUBLE,                    -- ensemble confidence of its side
    confidence_seed        DOUBLE,                    -- seed formula with the recorded accuracy
    confidence_calibrated  DOUBLE,                    -- the stored calibrator's map (what the filter reads)
    overall_health         DOUBLE,
    module_health          DOUBLE,                    -- health of source_module
    health_ts              TIMESTAMPTZ,               -- the health run used
    accuracy               DOUBLE,                    -- benchmarked accuracy of source_module (sizing)
    performance_score      DOUBLE,
    size_multiplier        DOUBLE,
    size_reason            VARCHAR,
    capped_by              VARCHAR,
    atr                    DOUBLE,
    vol_state              VARCHAR,
    tp1_rate               DOUBLE,
    tp2_rate               DOUBLE,
    tp3_rate               DOUBLE,
    learned_stop_atr       DOUBLE,
    exit_profile           VARCHAR,                   -- the adaptive TP/SL reason
    entry_ref              DOUBLE,                    -- the bar's close the levels were planned from
    stop_price             DOUBLE,
    tp1_price              DOUBLE,
    tp2_price              DOUBLE,
    tp3_price              DOUBLE,
    qty                    BIGINT,                    -- total shares over the brackets (0: not traded)
    accepted               BOOLEAN     NOT NULL,      -- passed filter, sizing, exit plan and order gate
    submitted              BOOLEAN     NOT NULL,      -- at least one bracket sent now (a re-run: false)
    reason_code            VARCHAR     NOT NULL,      -- accepted, or the first reason it was not traded
    failed                 VARCHAR,                   -- every failed filter rule / gate rule
    details                JSON,
    client_order_ids       VARCHAR,                   -- the brackets' entries, comma-separated
    run_id                 VARCHAR     NOT NULL,
    decided_at             TIMESTAMPTZ NOT NULL
);

-- Each bracket an accepted decision sent: which take-profit leg, with what planned prices.
CREATE TABLE IF NOT EXISTS decision_orders (
    client_order_id  VARCHAR     PRIMARY KEY,   -- the bracket's entry
    decision_id      VARCHAR     NOT NULL,
    leg              INTEGER     NOT NULL,      -- 1, 2, 3: the take-profit level
    symbol           VARCHAR     NOT NULL,
    side             VARCHAR     NOT NULL,
    qty              BIGINT      NOT NULL,
    entry_ref        DOUBLE      NOT NULL,
    take_profit      DOUBLE      NOT NULL,
    stop_price       DOUBLE      NOT NULL,      -- the initial stop: R = pnl / (qty x |entry - this|)
    broker           VARCHAR     NOT NULL,
    broker_order_id  VARCHAR,
    recorded_at      TIMESTAMPTZ NOT NULL
);

-- The configured broker's fills, synced at each reconciliation, with the bracket they belong to.
CREATE TABLE IF NOT EXISTS broker_fills (
    fill_key               VARCHAR       PRIMARY KEY,  -- broker|order id|fill time|qty
    broker                 VARCHAR       NOT NULL,
    order_id               VARCHAR       NOT NULL,
    client_order_id        VARCHAR       NOT NULL,
    entry_client_order_id  VARCHAR,                    -- the bracket's entry (NULL: not one of ours)
    symbol                 VARCHAR       NOT NULL,
    side                   VARCHAR       NOT NULL,
    role                   VARCHAR,                    -- entry | take_profit | stop_loss
    qty                    BIGINT        NOT NULL,
    price                  DECIMAL(18,4) NOT NULL,
    commission             DECIMAL(18,4) NOT NULL,
    ts                     TIMESTAMPTZ   NOT NULL,     -- event time
    recorded_at            TIMESTAMPTZ   NOT NULL
);

-- The newest account snapshot per broker (taken at every decision run's reconciliation).
CREATE VIEW IF NOT EXISTS v_account AS
WITH first_seen AS (
    SELECT broker, arg_min(equity, ts) AS first_equity FROM account_snapshots GROUP BY broker
)
SELECT a.broker, a.ts AS as_of, a.cash, a.equity, a.buying_power, f.first_equity,
       a.equity - f.first_equity AS pnl_since_first_snapshot
FROM account_snapshots a JOIN first_seen f USING (broker)
QUALIFY row_number() OVER (PARTITION BY a.broker ORDER BY a.ts DESC) = 1;

-- Open positions at the newest snapshot, with unrealized P&L at the snapshot's mark.
CREATE VIEW IF NOT EXISTS v_positions AS
SELECT p.broker, p.ts AS as_of, p.symbol, p.qty, p.avg_entry_price, p.market_value,
       CASE WHEN p.qty <> 0 THEN p.market_value / p.qty END AS mark,
       p.market_value - p.qty * p.avg_entry_price AS unrealized_pnl
FROM position_snapshots p
JOIN (SELECT broker, max(ts) AS ts FROM account_snapshots GROUP BY broker) a
  ON a.broker = p.broker AND a.ts = p.ts
WHERE p.qty <> 0;

-- Brackets still working (entry pending or position open), their planned legs and the current stop.
CREATE VIEW IF NOT EXISTS v_open_orders AS
WITH last_move AS (
    SELECT client_order_id, arg_max(new_stop, ts) AS stop_now, arg_max(rule, ts) AS last_rule,
           count(*) AS stop_moves
    FROM exit_adjustments GROUP BY client_order_id
)
SELECT r.broker, r.symbol, r.side, r.qty, r.status, r.bar_ts AS decided_at, o.leg, r.client_order_id,
       o.entry_ref, r.take_profit, r.stop_price AS initial_stop, coalesce(m.stop_now, r.stop_price) AS stop_now,
       coalesce(m.stop_moves, 0) AS stop_moves, m.last_rule
FROM order_records r
LEFT JOIN decision_orders o USING (client_order_id)
LEFT JOIN last_move m USING (client_order_id)
WHERE r.status IN ('new', 'held', 'accepted', 'pending_new', 'partially_filled', 'position_open');

-- Each bracket's entry and exit fills with the reason it closed.
CREATE VIEW IF NOT EXISTS v_bracket_results AS
WITH per AS (
    SELECT f.broker, f.entry_client_order_id AS client_order_id,
           sum(f.qty) FILTER (WHERE f.role = 'entry') AS entry_qty,
           sum(f.qty * f.price) FILTER (WHERE f.role = 'entry') / nullif(sum(f.qty) FILTER (WHERE f.role = 'entry'), 0) AS entry_price,
           min(f.ts) FILTER (WHERE f.role = 'entry') AS entry_ts,
           sum(f.qty) FILTER (WHERE f.role <> 'entry') AS exit_qty,
           sum(f.qty * f.price) FILTER (WHERE f.role <> 'entry') / nullif(sum(f.qty) FILTER (WHERE f.role <> 'entry'), 0) AS exit_price,
           max(f.ts) FILTER (WHERE f.role <> 'entry') AS exit_ts,
           arg_max(f.role, f.ts) FILTER (WHERE f.role <> 'entry') AS exit_role,
           sum(f.commission) AS commission
    FROM broker_fills f WHERE f.entry_client_order_id IS NOT NULL GROUP BY ALL
),
moves AS (
    SELECT client_order_id, bool_or(rule = 'breakeven_after_tp1') AS breakeven,
           bool_or(rule <> 'breakeven_after_tp1') AS tightened
    FROM exit_adjustments GROUP BY client_order_id
)
SELECT p.broker, o.decision_id, o.client_order_id, o.leg, o.symbol, o.side, o.qty, o.stop_price AS initial_stop,
       o.take_profit, p.entry_ts, p.entry_qty, p.entry_price, p.exit_ts, p.exit_qty, p.exit_price, p.commission,
       CASE WHEN o.side = 'buy' THEN 1 ELSE -1 END * p.exit_qty * (p.exit_price - p.entry_price) - p.commission AS pnl,
       p.entry_qty * abs(p.entry_price - o.stop_price) AS initial_risk,
       CASE
           WHEN p.exit_role IS NULL THEN NULL
           WHEN p.exit_role = 'take_profit' THEN 'TP' || o.leg
           WHEN p.exit_role = 'stop_loss' AND coalesce(m.breakeven, false) THEN 'breakeven'
           WHEN p.exit_role = 'stop_loss' THEN 'stop'
           ELSE 'manual'
       END AS exit_reason,
       coalesce(m.tightened, false) AS stop_tightened,
       coalesce(p.exit_qty, 0) = p.entry_qty AS closed
FROM per p JOIN decision_orders o USING (client_order_id)
LEFT JOIN moves m USING (client_order_id);

-- A closed trade: one decision's brackets, all entered and all exited. R = pnl / initial risk; the exit
-- reason is the last leg's (TP1, TP2, TP3, stop, breakeven, manual); contributors = the modules that voted.
CREATE VIEW IF NOT EXISTS v_trades AS
SELECT b.broker, b.decision_id, d.symbol, d.side, d.ts AS decided_at, min(b.entry_ts) AS entry_ts,
       max(b.exit_ts) AS exit_ts, sum(b.entry_qty) AS qty,
       sum(b.entry_qty * b.entry_price) / sum(b.entry_qty) AS entry_price,
       sum(b.exit_qty * b.exit_price) / sum(b.exit_qty) AS exit_price,
       sum(b.pnl) AS pnl, sum(b.initial_risk) AS initial_risk,
       sum(b.pnl) / nullif(sum(b.initial_risk), 0) AS r_multiple,
       arg_max(b.exit_reason, (b.exit_ts, b.leg)) AS exit_reason,
       string_agg('tp' || b.leg || ':' || b.exit_reason, ', ' ORDER BY b.leg) AS legs,
       d.consensus, d.confidence_calibrated, d.contributors, d.source_module
FROM v_bracket_results b JOIN decisions d USING (decision_id)
GROUP BY b.broker, b.decision_id, d.symbol, d.side, d.ts, d.consensus, d.confidence_calibrated,
         d.contributors, d.source_module
HAVING bool_and(b.closed) AND count(*) = (SELECT count(*) FROM decision_orders o WHERE o.decision_id = b.decision_id);

-- Which modules earned money: every closed trade counted once for each module that voted for it.
CREATE VIEW IF NOT EXISTS v_module_attribution AS
SELECT t.broker, trim(m.module) AS module, count(*) AS trades,
       count(*) FILTER (WHERE t.pnl > 0) AS wins,
       count(*) FILTER (WHERE t.pnl > 0) / count(*) AS win_rate,
       sum(t.pnl) AS pnl,
       sum(t.pnl / len(string_split(t.contributors, ','))) AS pnl_shared,
       avg(t.r_multiple) AS avg_r
FROM v_trades t, unnest(string_split(t.contributors, ',')) AS m(module)
WHERE t.contributors IS NOT NULL AND t.contributors <> ''
GROUP BY ALL;
