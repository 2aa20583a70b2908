-- Health-gate blocks per backtest mode (docs/backtest.md, docs/health.md "Explained blocks"): how many
-- candidates the gate failed, how many it alone kept out, and per rule the counts and the component that
-- drove the blocked scores down most often (models.trade_filter.gate_block_counts).
ALTER TABLE backtest_runs ADD COLUMN IF NOT EXISTS health_blocked INTEGER;       -- any health rule failed
ALTER TABLE backtest_runs ADD COLUMN IF NOT EXISTS health_blocked_only INTEGER;  -- the health gate alone
ALTER TABLE backtest_runs ADD COLUMN IF NOT EXISTS gate_blocks VARCHAR;          -- JSON: [{rule, first, any, only, top_driver}]
