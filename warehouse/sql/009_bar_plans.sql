-- Crash recovery of the decision flow (docs/trading.md, "Crash recovery"). A decision bar is stored in
-- two transactions: the plan (decisions, the brackets they will send as decision_orders rows without a
-- broker order id, and the stop moves below) before the first order leaves, then what the broker did.
-- A re-run finds a planned bar whose orders or stop moves are not all recorded and carries them out,
-- idempotently (client order ids; a stop replaced before is found by its replacement).
CREATE TABLE IF NOT EXISTS stop_move_plans (
    replaced_order_id  VARCHAR       PRIMARY KEY,   -- the working stop leg to replace
    ts                 TIMESTAMPTZ   NOT NULL,      -- the decision bar
    broker             VARCHAR       NOT NULL,
    symbol             VARCHAR       NOT NULL,
    client_order_id    VARCHAR,                     -- the bracket's entry
    decision_id        VARCHAR,
    leg                INTEGER,
    side               VARCHAR       NOT NULL,      -- the bracket's side
    entry_price        DECIMAL(18,4) NOT NULL,
    old_stop           DECIMAL(18,4) NOT NULL,
    new_stop           DECIMAL(18,4) NOT NULL,
    rule               VARCHAR       NOT NULL,
    reason             VARCHAR       NOT NULL,
    planned_at         TIMESTAMPTZ   NOT NULL
);
