-- A job is the message it carries: (chat_id, message_id) names it for
-- good, while Telegram picks the next update_id at random after a week
-- without updates, so an old id can come back with a new file. update_id
-- stays for tracing and admin lookups (and as the bus's dedup key, which
-- only lives for minutes), no longer unique.
ALTER TABLE jobs DROP CONSTRAINT jobs_update_id_key;
CREATE UNIQUE INDEX jobs_message ON jobs (chat_id, message_id);
CREATE INDEX jobs_update ON jobs (update_id, created_at);
