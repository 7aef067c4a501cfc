-- teledrop catalog, initial schema (Postgres).
--
-- Conventions (shared with the SQLite schema, which stores the same data
-- in that engine's types):
-- - ids are uuid; timestamps timestamptz written with millisecond
--   precision by the application (both backends agree on the value);
-- - counters and sizes are bigint with CHECK (>= 0); the application maps
--   them to u64/u32 with checked conversions;
-- - job and file states are constrained here; media kinds and error kinds
--   are validated by the Rust types on write and on read (a new kind in
--   the code must not need a migration);
-- - SHA-256 digests are 64 lowercase hex characters.

-- One row per stored message. Rows are never removed: a deleted file keeps
-- its row (state 'deleted') so links answer "gone" instead of "unknown".
-- `file_unique_id` has no foreign key to `blobs`: the blob row is removed
-- with the last live file that uses it while deleted file rows remain.
CREATE TABLE files (
    id               uuid        PRIMARY KEY,
    owner            bigint      NOT NULL,
    chat_id          bigint      NOT NULL,
    message_id       bigint      NOT NULL,
    kind             text        NOT NULL,
    file_unique_id   text        NOT NULL,
    name             text        NOT NULL,
    mime_type        text        NOT NULL,
    size             bigint      NOT NULL CHECK (size >= 0),
    sha256           text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    object_key       text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('active', 'deleted')),
    created_at       timestamptz NOT NULL,
    last_download_at timestamptz,
    download_count   bigint      NOT NULL DEFAULT 0 CHECK (download_count >= 0),
    deleted_at       timestamptz,
    CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
);
CREATE INDEX files_owner ON files (owner, created_at);
CREATE INDEX files_unique_id ON files (file_unique_id, state);
CREATE INDEX files_created_at ON files (created_at);

-- One row per distinct Telegram file_unique_id whose bytes are stored.
CREATE TABLE blobs (
    file_unique_id text        PRIMARY KEY,
    object_key     text        NOT NULL UNIQUE,
    size           bigint      NOT NULL CHECK (size >= 0),
    sha256         text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at     timestamptz NOT NULL
);

-- One row per accepted update. `incoming` (the IncomingFile as JSON) is
-- authoritative; user/chat/message are copied out of it for queries.
CREATE TABLE jobs (
    id                uuid        PRIMARY KEY,
    update_id         bigint      NOT NULL UNIQUE,
    user_id           bigint      NOT NULL,
    chat_id           bigint      NOT NULL,
    message_id        bigint      NOT NULL,
    incoming          jsonb       NOT NULL,
    state             text        NOT NULL CHECK (state IN ('pending', 'running', 'stored', 'failed')),
    attempts          bigint      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_kind        text,
    error_detail      text,
    status_message_id bigint,
    file_id           uuid        REFERENCES files (id),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- A job is stored exactly when it has produced its file.
    CHECK ((state = 'stored') = (file_id IS NOT NULL))
);
CREATE INDEX jobs_unfinished ON jobs (created_at, id) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_user ON jobs (user_id, created_at);

-- A job's timeline; `seq` orders events written within one millisecond.
CREATE TABLE job_events (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    from_state text        CHECK (from_state IN ('pending', 'running', 'stored', 'failed')),
    to_state   text        NOT NULL CHECK (to_state IN ('pending', 'running', 'stored', 'failed')),
    error_kind text,
    note       text        NOT NULL DEFAULT ''
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE links (
    token         uuid        PRIMARY KEY,
    file_id       uuid        NOT NULL REFERENCES files (id),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    max_downloads bigint      CHECK (max_downloads >= 0),
    password_hash text,
    revoked_at    timestamptz
);
CREATE INDEX links_file ON links (file_id);

-- Changed only in the transactions that add or delete files.
CREATE TABLE usage (
    user_id bigint PRIMARY KEY,
    bytes   bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    files   bigint NOT NULL DEFAULT 0 CHECK (files >= 0)
);

CREATE TABLE policies (
    key        text        PRIMARY KEY,
    generation bigint      NOT NULL,
    spec       jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);
