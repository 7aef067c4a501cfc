-- A job is the message it carries: (chat_id, message_id) names it for
-- good, while Telegram picks the next update_id at random after a week
-- without updates, so an old id can come back with a new file. update_id
-- stays for tracing and admin lookups (and as the bus's dedup key, which
-- only lives for minutes), no longer unique.
--
-- SQLite cannot drop a column's UNIQUE, so `jobs` is rebuilt. Migrations
-- run inside one transaction, where foreign keys cannot be switched off,
-- and dropping `jobs` would cascade into its children: the children are
-- rebuilt too, pointing at the new table before the old one goes. Renaming
-- `jobs_new` to `jobs` then rewrites their references.

CREATE TABLE jobs_new (
    id                TEXT    PRIMARY KEY CHECK (length(id) = 36),
    update_id         INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    chat_id           INTEGER NOT NULL,
    message_id        INTEGER NOT NULL,
    incoming          TEXT    NOT NULL CHECK (json_valid(incoming)),
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'stored', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_kind        TEXT,
    error_detail      TEXT,
    status_message_id INTEGER,
    file_id           TEXT    REFERENCES files (id),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    replied_at        INTEGER,
    CHECK ((state = 'stored') = (file_id IS NOT NULL))
) STRICT;
INSERT INTO jobs_new (id, update_id, user_id, chat_id, message_id, incoming, state, attempts, error_kind,
                      error_detail, status_message_id, file_id, created_at, updated_at, replied_at)
SELECT id, update_id, user_id, chat_id, message_id, incoming, state, attempts, error_kind,
       error_detail, status_message_id, file_id, created_at, updated_at, replied_at
FROM jobs;

CREATE TABLE job_events_new (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT    NOT NULL REFERENCES jobs_new (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    from_state TEXT    CHECK (from_state IN ('pending', 'running', 'stored', 'failed')),
    to_state   TEXT    NOT NULL CHECK (to_state IN ('pending', 'running', 'stored', 'failed')),
    error_kind TEXT,
    note       TEXT    NOT NULL DEFAULT ''
) STRICT;
INSERT INTO job_events_new (seq, job_id, at, from_state, to_state, error_kind, note)
SELECT seq, job_id, at, from_state, to_state, error_kind, note FROM job_events;

CREATE TABLE rate_admissions_new (
    job_id  TEXT    PRIMARY KEY REFERENCES jobs_new (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    at      INTEGER NOT NULL
) STRICT;
INSERT INTO rate_admissions_new (job_id, user_id, at) SELECT job_id, user_id, at FROM rate_admissions;

DROP TABLE rate_admissions;
DROP TABLE job_events;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE job_events_new RENAME TO job_events;
ALTER TABLE rate_admissions_new RENAME TO rate_admissions;

CREATE UNIQUE INDEX jobs_message ON jobs (chat_id, message_id);
CREATE INDEX jobs_update ON jobs (update_id, created_at);
CREATE INDEX jobs_unfinished ON jobs (created_at, id) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_user ON jobs (user_id, created_at);
CREATE INDEX jobs_unreplied ON jobs (created_at, id) WHERE state IN ('stored', 'failed') AND replied_at IS NULL;
CREATE INDEX job_events_job ON job_events (job_id, seq);
CREATE INDEX rate_admissions_user ON rate_admissions (user_id, at);
