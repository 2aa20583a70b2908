-- Features stored in time order (interval, ts, symbol), so that reading one bar's rows (the decision bar:
-- warehouse.decisions.bar_frame) scans only the row groups whose ts zonemap holds the bar. Stored by
-- symbol, a 500-symbol warehouse read all of its ~150 MB for 500 rows (0.3-0.7 s; 15 ms in time order).
-- warehouse.features.write_features appends in time order from now on; this rewrites the rows stored
-- before (one pass, once: ~10 s for 500 symbols x 3.5 years of daily bars).
CREATE TABLE features_by_time AS SELECT * FROM features;
DELETE FROM features;
INSERT INTO features SELECT * FROM features_by_time ORDER BY interval, ts, symbol;
DROP TABLE features_by_time;
