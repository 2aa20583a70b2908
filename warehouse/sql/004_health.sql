-- Module health, learned thresholds, predictive alerts and the metric history they are learned from.
-- Written by flows/health.py (health, metric_history, alerts) and flows/thresholds.py (thresholds).
-- docs/health.md has the formulas.

-- One row per module per health run, plus the 'overall' row (module = 'overall').
CREATE TABLE IF NOT EXISTS health (
    ts           TIMESTAMPTZ NOT NULL,   -- the health run's clock
    module       VARCHAR     NOT NULL,   -- patterns, ..., ensemble, or 'overall'
    score        DOUBLE,                 -- 0-100; NULL when no component could be measured
    components   JSON        NOT NULL,   -- per component: score, value, ok, bad, weight, lost, detail
                                         -- (overall row: the module scores and weights)
    capped_by    VARCHAR,                -- the component whose cap (worst + cap_margin) set the score
    run_id       VARCHAR     NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ts, module)
);

-- The measurements behind health, one point per (module, metric, event time): thresholds are learned
-- and trends fitted from here. Measurements taken from a stored fact (latency of a predictions batch,
-- a benchmark's accuracy) carry that fact's time, so re-reading the same fact does not add a point.
-- Other stages may add their own metrics (e.g. the exit planner's stop_distance_atr).
CREATE TABLE IF NOT EXISTS metric_history (
    module       VARCHAR     NOT NULL,
    metric       VARCHAR     NOT NULL,   -- latency_ms, error_rate, accuracy, psi, health_score, ...
    ts           TIMESTAMPTZ NOT NULL,   -- event time of the measurement
    value        DOUBLE      NOT NULL,
    run_id       VARCHAR     NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (module, metric, ts)
);

-- Every learned threshold, one row per (module, metric) per thresholds run.
CREATE TABLE IF NOT EXISTS thresholds (
    module        VARCHAR     NOT NULL,
    metric        VARCHAR     NOT NULL,
    learned_at    TIMESTAMPTZ NOT NULL,
    value         DOUBLE      NOT NULL,
    bound         VARCHAR     NOT NULL,   -- upper (breached above) | lower (breached below)
    method        VARCHAR     NOT NULL,   -- mad | quantile | default
    window_points INTEGER     NOT NULL,   -- trailing points the method may use
    n             INTEGER     NOT NULL,   -- points it used
    center        DOUBLE,                 -- median of the window
    spread        DOUBLE,                 -- 1.4826 MAD (floored), or |quantile - median|
    k             DOUBLE,
    quantile      DOUBLE,
    is_default    BOOLEAN     NOT NULL,   -- history too short: the documented default
    reason        VARCHAR     NOT NULL,
    window_start  TIMESTAMPTZ,
    window_end    TIMESTAMPTZ,
    run_id        VARCHAR     NOT NULL,
    PRIMARY KEY (module, metric, learned_at)
);

-- One row per alert episode: opened when a metric is breached or predicted to breach within the warning
-- horizon, updated by every health run while open, resolved when the condition clears.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id                 VARCHAR     PRIMARY KEY,
    ts                       TIMESTAMPTZ NOT NULL,   -- opened at (health run clock)
    module                   VARCHAR     NOT NULL,
    metric                   VARCHAR     NOT NULL,
    bound                    VARCHAR     NOT NULL,
    current                  DOUBLE,                 -- newest value
    level                    DOUBLE,                 -- fitted value now (or median of the last points)
    threshold                DOUBLE      NOT NULL,
    slope                    DOUBLE,                 -- Theil-Sen slope, metric units per hour
    slope_low                DOUBLE,                 -- its confidence interval
    slope_high               DOUBLE,
    time_to_threshold_hours  DOUBLE,                 -- 0 = breached
    severity                 VARCHAR     NOT NULL,   -- critical (< 4 h or breached) | warning (< 24 h)
    reason                   VARCHAR     NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL,
    resolved_at              TIMESTAMPTZ,            -- NULL while active
    resolve_reason           VARCHAR,
    run_id                   VARCHAR     NOT NULL    -- the health run that last touched it
);

-- The newest health run: one row per module and the overall row.
CREATE VIEW IF NOT EXISTS v_latest_health AS
SELECT * FROM health WHERE ts = (SELECT max(ts) FROM health);

-- The newest threshold of each (module, metric).
CREATE VIEW IF NOT EXISTS v_latest_thresholds AS
SELECT * FROM thresholds
QUALIFY row_number() OVER (PARTITION BY module, metric ORDER BY learned_at DESC) = 1;

-- Alerts not yet resolved, most urgent first.
CREATE VIEW IF NOT EXISTS v_active_alerts AS
SELECT * FROM alerts WHERE resolved_at IS NULL
ORDER BY time_to_threshold_hours NULLS LAST, module, metric;
