-- Signal modules: the registry of trained models, their predictions, benchmarks and exit statistics.
-- Written by flows/retrain.py (model_registry, predictions) and flows/benchmark.py (benchmarks, exit_stats).

CREATE TABLE IF NOT EXISTS model_registry (
    module               VARCHAR     NOT NULL,   -- patterns, volatility, regime, selector, imbalance, direction, ensemble
    interval             VARCHAR     NOT NULL,
    version              INTEGER     NOT NULL,   -- 1, 2, ... per (module, interval)
    trained_at           TIMESTAMPTZ NOT NULL,
    train_start          TIMESTAMPTZ NOT NULL,   -- the final model's training bars
    train_end            TIMESTAMPTZ NOT NULL,
    valid_start          TIMESTAMPTZ NOT NULL,   -- the validation window: the newest walk-forward test block
    valid_end            TIMESTAMPTZ NOT NULL,
    train_rows           BIGINT      NOT NULL,
    valid_rows           BIGINT      NOT NULL,
    label_horizon        INTEGER     NOT NULL,   -- bars label_up looks ahead
    feature_set_version  VARCHAR     NOT NULL,
    params               JSON        NOT NULL,   -- estimator parameters (ensemble: members, weights, vote)
    config_hash          VARCHAR     NOT NULL,   -- sha256 of params + training config + feature set version
    data_hash            VARCHAR     NOT NULL,   -- sha256 of the training frame (features and labels)
    metrics              JSON        NOT NULL,   -- validation metrics; walk_forward and calibration inside
    calibration          VARCHAR     NOT NULL,   -- seed | isotonic | sigmoid | none
    status               VARCHAR     NOT NULL,   -- champion | challenger | retired
    status_reason        VARCHAR,                -- why: the promotion verdict, or what retired it
    promoted_at          TIMESTAMPTZ,            -- when it became champion (NULL: never)
    retired_at           TIMESTAMPTZ,
    artifact_path        VARCHAR     NOT NULL,   -- pickle under data/models/<module>/<interval>/v<version>.pkl
    run_id               VARCHAR     NOT NULL,
    PRIMARY KEY (module, interval, version)
);

CREATE TABLE IF NOT EXISTS predictions (
    symbol                 VARCHAR     NOT NULL,
    interval               VARCHAR     NOT NULL,
    ts                     TIMESTAMPTZ NOT NULL,   -- the bar the prediction is made at (uses bars <= ts)
    module                 VARCHAR     NOT NULL,
    model_version          INTEGER     NOT NULL,   -- model_registry.version of the retrain that made it
    kind                   VARCHAR     NOT NULL,   -- walk_forward (test block of a split) | live (newest bars)
    label_horizon          INTEGER     NOT NULL,   -- bars ahead the probability is about
    p_up                   DOUBLE      NOT NULL,   -- raw P(forward return > 0); exactly 0.5 = no opinion
    p_up_calibrated        DOUBLE      NOT NULL,   -- after the fitted calibration map
    confidence_raw         DOUBLE      NOT NULL,   -- max(p_up, 1 - p_up)
    confidence_seed        DOUBLE      NOT NULL,   -- seed formula: raw * (0.7 * accuracy / raw + 0.3), clamped
    confidence_calibrated  DOUBLE      NOT NULL,   -- confidence of the predicted side after the fitted map
    seed_accuracy          DOUBLE      NOT NULL,   -- the accuracy the seed formula used
    direction              SMALLINT    NOT NULL,   -- +1 up, -1 down, 0 no opinion (p_up = 0.5)
    out_of_sample          BOOLEAN     NOT NULL,   -- made by a model trained only on bars before ts
    predict_latency_ms     DOUBLE,                 -- batch predict time / rows
    run_id                 VARCHAR     NOT NULL,
    predicted_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, interval, ts, module)
);

CREATE TABLE IF NOT EXISTS benchmarks (
    run_id             VARCHAR     NOT NULL,
    computed_at        TIMESTAMPTZ NOT NULL,
    module             VARCHAR     NOT NULL,
    interval           VARCHAR     NOT NULL,
    window_name        VARCHAR     NOT NULL,   -- e.g. 24h, 7d, 30d, 365d, all
    window_start       TIMESTAMPTZ,            -- exclusive (NULL for all)
    window_end         TIMESTAMPTZ NOT NULL,   -- the newest labelled bar, inclusive
    model_version      INTEGER,                -- newest model version among the window's predictions
    n                  BIGINT      NOT NULL,   -- labelled predictions in the window
    coverage           DOUBLE,                 -- share with an opinion (p_up <> 0.5)
    base_rate          DOUBLE,                 -- share of label_up = 1
    accuracy           DOUBLE,                 -- P(up) vs label_up, on the rows with an opinion
    precision          DOUBLE,
    recall             DOUBLE,
    auc                DOUBLE,
    brier              DOUBLE,                 -- of raw P(up) vs label_up
    log_loss           DOUBLE,
    ece                DOUBLE,                 -- binary ECE of raw P(up) vs label_up (feeds performance_score)
    ece_raw            DOUBLE,                 -- ECE of the predicted side's confidence vs hit: raw,
    ece_seed           DOUBLE,                 --   seed formula,
    ece_calibrated     DOUBLE,                 --   fitted calibration
    brier_raw          DOUBLE,                 -- Brier of the same confidence/hit pairs
    brier_seed         DOUBLE,
    brier_calibrated   DOUBLE,
    latency_p50_ms     DOUBLE,
    latency_p95_ms     DOUBLE,
    performance_score  DOUBLE,                 -- 0-100 (docs/modules.md, Metrics)
    PRIMARY KEY (run_id, module, interval, window_name)
);

CREATE TABLE IF NOT EXISTS exit_stats (
    run_id        VARCHAR     NOT NULL,
    computed_at   TIMESTAMPTZ NOT NULL,
    module        VARCHAR     NOT NULL,
    interval      VARCHAR     NOT NULL,
    window_name   VARCHAR     NOT NULL,
    basis         VARCHAR     NOT NULL,   -- labels (triple-barrier outcomes on the predicted side) | trades
    n             BIGINT      NOT NULL,   -- calls (direction <> 0) with a known outcome
    tp1_rate      DOUBLE,                 -- TP1 reached before the stop
    tp2_rate      DOUBLE,
    tp3_rate      DOUBLE,
    stop_rate     DOUBLE,                 -- stop before any TP
    timeout_rate  DOUBLE,                 -- nothing touched within the horizon
    avg_r         DOUBLE,                 -- mean R of a one-shot exit at the first barrier
    PRIMARY KEY (run_id, module, interval, window_name, basis)
);

-- The newest benchmark row per module, interval and window: "which module is good now".
CREATE VIEW IF NOT EXISTS v_latest_benchmarks AS
SELECT * FROM benchmarks
QUALIFY row_number() OVER (PARTITION BY module, interval, window_name ORDER BY computed_at DESC, run_id DESC) = 1;

-- The current champion of each module, and since when.
CREATE VIEW IF NOT EXISTS v_champions AS
SELECT module, interval, version, promoted_at AS champion_since, trained_at, train_start, train_end,
       valid_start, valid_end, calibration, metrics, config_hash, artifact_path
FROM model_registry WHERE status = 'champion';

-- One row per module, interval and window: the latest benchmark, its exit statistics from labels, and the
-- champion (qtrader scoreboard).
CREATE VIEW IF NOT EXISTS v_scoreboard AS
SELECT b.module, b.interval, b.window_name, b.window_start, b.window_end, b.n, b.coverage, b.accuracy, b.auc,
       b.ece_raw, b.ece_seed, b.ece_calibrated, b.brier_raw, b.brier_calibrated, b.brier, b.log_loss,
       b.latency_p50_ms, b.latency_p95_ms, b.performance_score,
       e.n AS exit_n, e.tp1_rate, e.tp2_rate, e.tp3_rate, e.stop_rate, e.timeout_rate, e.avg_r,
       c.version AS champion_version, c.champion_since, b.run_id, b.computed_at
FROM v_latest_benchmarks b
LEFT JOIN exit_stats e
       ON e.run_id = b.run_id AND e.module = b.module AND e.interval = b.interval
      AND e.window_name = b.window_name AND e.basis = 'labels'
LEFT JOIN v_champions c ON c.module = b.module AND c.interval = b.interval;
