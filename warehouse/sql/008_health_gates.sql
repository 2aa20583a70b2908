-- Health that holds on real markets (docs/health.md): the gate each health score was compared with and
-- what drove it down, the retrains that confirmed a champion, and the health drivers of a decision.

-- The trade filter's gate of each health row, the module's learned baseline, and the components that
-- cost the most points (overall row: per module and component).
ALTER TABLE health ADD COLUMN IF NOT EXISTS baseline DOUBLE;       -- learned lower bound of its own health_score (NULL: none yet)
ALTER TABLE health ADD COLUMN IF NOT EXISTS gate DOUBLE;           -- the trade filter's gate at this run
ALTER TABLE health ADD COLUMN IF NOT EXISTS gate_source VARCHAR;   -- learned | fallback | ceiling | floor
ALTER TABLE health ADD COLUMN IF NOT EXISTS drivers JSON;          -- [{component, lost, score, detail}] (overall: + module)

-- A retrain that evaluated the champion against its challenger and kept it: model staleness counts from
-- the newest of trained_at and confirmed_at.
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS confirmed_at TIMESTAMPTZ;
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS confirmed_by VARCHAR;   -- that retrain's run_id

-- A candidate the health gate blocked: the gate rules it failed and what drove each score down.
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS health_drivers VARCHAR;     -- e.g. ensemble/prediction_freshness -50.0

-- Health over time with the gate line, for the report's panel.
CREATE OR REPLACE VIEW v_health_timeline AS
SELECT ts, module, score, gate, gate_source, baseline, capped_by, score < gate AS below_gate, run_id
FROM health;
