-- Live files in creation order: the retention sweep pages through them
-- with `state = 'active' … ORDER BY created_at, id`, and quota checks sum
-- them. Deleted rows, which are never removed, stay out of the index.
CREATE INDEX files_live ON files (created_at, id) WHERE state = 'active';
