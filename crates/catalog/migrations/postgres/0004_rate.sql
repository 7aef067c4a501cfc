-- The per-user rate limit: one row per job that took a slot, and when.
-- Keyed by job so that admitting a job again (a redelivery, a retry) finds
-- its slot instead of taking another. A row is removed once it has left
-- the window and its job is finished (an unfinished job may still come
-- back and must find its slot); admissions count only inside the window.
CREATE TABLE rate_admissions (
    job_id  uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    user_id bigint      NOT NULL,
    at      timestamptz NOT NULL
);
CREATE INDEX rate_admissions_user ON rate_admissions (user_id, at);
