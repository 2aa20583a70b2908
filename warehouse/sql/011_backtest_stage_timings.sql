-- Where a backtest's time went (docs/backtest.md, "Speed"): seconds per stage of one run. Stages: load
-- (history read), retrains (the model timeline's retrain flows and each period's predictions), model
-- timeline (the rest of it: bars appended, benchmarks, health, thresholds, alerts, snapshots),
-- replay <mode> (each mode's decision replay, its results file included; modes run side by side through
-- the task runner, so their sum can exceed the wall time), write (the run record and its tables), total
-- (wall time of the flow up to the write).
CREATE TABLE IF NOT EXISTS backtest_stage_timings (
    run_id     VARCHAR  NOT NULL,
    stage      VARCHAR  NOT NULL,
    seconds    DOUBLE   NOT NULL,
    position   INTEGER  NOT NULL,   -- order of the stage in the run
    PRIMARY KEY (run_id, stage)
);
