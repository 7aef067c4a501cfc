-- Fair queues: `claim` counts a user's running jobs on every start, so
-- that count must not scan the user's whole history.
CREATE INDEX jobs_running_user ON jobs (user_id) WHERE state = 'running';

-- Replies that must not repeat with every message (the hint for text, the
-- refusal of a user not allowed): when each was last sent to whom, shared
-- by every worker.
CREATE TABLE notices (
    user_id bigint      NOT NULL,
    kind    text        NOT NULL,
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, kind)
);
