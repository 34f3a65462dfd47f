-- Run once by the postgres image on an empty data volume, as POSTGRES_USER (mlops), after it has
-- created POSTGRES_DB (mlops). One server holds:
--   mlops   the loop's own state (mlops/db.py: audit trail, locks) and the scheduler's job store
--           (APScheduler's apscheduler_jobs table and the scheduler lease, mlops/monitor/scheduler.py)
--   mlflow  MLflow's backend store (experiments, runs, registered models); MLflow migrates it itself
CREATE DATABASE mlflow;
