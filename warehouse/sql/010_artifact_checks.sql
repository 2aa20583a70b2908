-- Model artifacts belong to their warehouse and are checked on load (warehouse/models.py, "artifacts").
-- A version's pickle is named by the sha256 of its bytes under data/models/<warehouse>-<id>/; loading
-- compares the file's hash with artifact_sha256 before unpickling, and a refusal is recorded here so the
-- health flow and `qtrader sql` see it.

ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS artifact_sha256 VARCHAR;        -- NULL: registered before artifacts were hashed (refused: retrain)
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS artifact_status VARCHAR;        -- NULL (not checked yet) | ok | unusable
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS artifact_problem VARCHAR;       -- why it is unusable (missing, changed, no hash, cannot unpickle)
ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS artifact_checked_at TIMESTAMPTZ; -- when a load last changed artifact_status

-- The current champion of each module, and since when; with the state of its artifact.
CREATE OR REPLACE VIEW v_champions AS
SELECT module, interval, version, promoted_at AS champion_since, trained_at, train_start, train_end,
       valid_start, valid_end, calibration, metrics, config_hash, artifact_path,
       artifact_sha256, artifact_status, artifact_problem, artifact_checked_at
FROM model_registry WHERE status = 'champion';
