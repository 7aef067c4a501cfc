-- The per-user rate limit: one row per job that took a slot, and when
-- (unix milliseconds). Keyed by job so that admitting a job again finds its
-- slot; a row is removed once it has left the window and its job is
-- finished.
CREATE TABLE rate_admissions (
    job_id  TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    at      INTEGER NOT NULL
) STRICT;
CREATE INDEX rate_admissions_user ON rate_admissions (user_id, at);
