-- teledrop catalog, initial schema (SQLite).
--
-- Same tables and rules as the Postgres schema, in SQLite's types:
-- - STRICT tables, so a column holds only its declared type;
-- - ids and link tokens are TEXT, lowercase hyphenated UUIDs;
-- - timestamps are INTEGER unix milliseconds (UTC);
-- - JSON is TEXT checked with json_valid();
-- - counters and sizes are INTEGER with CHECK (>= 0);
-- - job and file states are constrained here; media kinds and error kinds
--   are validated by the Rust types on write and on read;
-- - SHA-256 digests are 64 lowercase hex characters.

-- Rows are never removed: a deleted file keeps its row (state 'deleted').
-- `file_unique_id` has no foreign key to `blobs`: the blob row is removed
-- with the last live file that uses it while deleted file rows remain.
CREATE TABLE files (
    id               TEXT    PRIMARY KEY CHECK (length(id) = 36),
    owner            INTEGER NOT NULL,
    chat_id          INTEGER NOT NULL,
    message_id       INTEGER NOT NULL,
    kind             TEXT    NOT NULL,
    file_unique_id   TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    mime_type        TEXT    NOT NULL,
    size             INTEGER NOT NULL CHECK (size >= 0),
    sha256           TEXT    NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    object_key       TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('active', 'deleted')),
    created_at       INTEGER NOT NULL,
    last_download_at INTEGER,
    download_count   INTEGER NOT NULL DEFAULT 0 CHECK (download_count >= 0),
    deleted_at       INTEGER,
    CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
) STRICT;
CREATE INDEX files_owner ON files (owner, created_at);
CREATE INDEX files_unique_id ON files (file_unique_id, state);
CREATE INDEX files_created_at ON files (created_at);

CREATE TABLE blobs (
    file_unique_id TEXT    PRIMARY KEY,
    object_key     TEXT    NOT NULL UNIQUE,
    size           INTEGER NOT NULL CHECK (size >= 0),
    sha256         TEXT    NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE jobs (
    id                TEXT    PRIMARY KEY CHECK (length(id) = 36),
    update_id         INTEGER NOT NULL UNIQUE,
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
    CHECK ((state = 'stored') = (file_id IS NOT NULL))
) STRICT;
CREATE INDEX jobs_unfinished ON jobs (created_at, id) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_user ON jobs (user_id, created_at);

CREATE TABLE job_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    from_state TEXT    CHECK (from_state IN ('pending', 'running', 'stored', 'failed')),
    to_state   TEXT    NOT NULL CHECK (to_state IN ('pending', 'running', 'stored', 'failed')),
    error_kind TEXT,
    note       TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE links (
    token         TEXT    PRIMARY KEY CHECK (length(token) = 36),
    file_id       TEXT    NOT NULL REFERENCES files (id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    max_downloads INTEGER CHECK (max_downloads >= 0),
    password_hash TEXT,
    revoked_at    INTEGER
) STRICT;
CREATE INDEX links_file ON links (file_id);

CREATE TABLE usage (
    user_id INTEGER PRIMARY KEY,
    bytes   INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    files   INTEGER NOT NULL DEFAULT 0 CHECK (files >= 0)
) STRICT;

CREATE TABLE policies (
    key        TEXT    PRIMARY KEY,
    generation INTEGER NOT NULL,
    spec       TEXT    NOT NULL CHECK (json_valid(spec)),
    updated_at INTEGER NOT NULL
) STRICT;
