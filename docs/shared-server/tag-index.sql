-- mlflow-ci's lookups ask MLflow for runs by tag value (the training cache by fingerprint, the baseline by
-- commit). MLflow's schema indexes tags by (key, run_uuid) only, so each such lookup reads every run's tag
-- of that key; with this index it reads the few rows that match. The same index mlflow-ci adds to a local
-- SQLite store. Safe to run again; MLflow's migrations leave it alone.
CREATE INDEX IF NOT EXISTS mlflow_ci_tags_key_value ON tags (key, value)
