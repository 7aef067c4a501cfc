-- Fair queues: `claim` counts a user's running jobs on every start, so
-- that count must not scan the user's whole history.
CREATE INDEX jobs_running_user ON jobs (user_id) WHERE state = 'running';

-- Replies that must not repeat with every message (the hint for text, the
-- refusal of a user not allowed): when each was last sent (unix
-- milliseconds) to whom.
CREATE TABLE notices (
    user_id INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind)
) STRICT;
