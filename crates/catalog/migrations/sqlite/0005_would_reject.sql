-- Files a dry-run `Reject` quota would have refused (they were accepted),
-- counted by workers at commit and shown by the controller in the policy's
-- status. Kept when the spec is replaced, dropped with the row.
ALTER TABLE policies ADD COLUMN would_reject INTEGER NOT NULL DEFAULT 0 CHECK (would_reject >= 0);
