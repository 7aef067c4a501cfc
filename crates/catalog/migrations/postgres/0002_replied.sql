-- When the user was told a job's outcome. A job that is final but not yet
-- replied (the process died between commit and reply) is replied again at
-- recovery; the reply is an edit of the status message, so repeating it is
-- harmless.
ALTER TABLE jobs ADD COLUMN replied_at timestamptz;
CREATE INDEX jobs_unreplied ON jobs (created_at, id) WHERE state IN ('stored', 'failed') AND replied_at IS NULL;
