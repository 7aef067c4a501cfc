-- When the user was told a job's outcome (unix milliseconds). A job that is
-- final but not yet replied is replied again at recovery.
ALTER TABLE jobs ADD COLUMN replied_at INTEGER;
CREATE INDEX jobs_unreplied ON jobs (created_at, id) WHERE state IN ('stored', 'failed') AND replied_at IS NULL;
