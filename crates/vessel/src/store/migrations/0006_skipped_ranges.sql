-- A gap given up is one row however many sequences it spans: `sequence` is its first missing
-- sequence and `last_sequence` its last. `resolved_bundle` is set once every sequence of the
-- range has arrived late (the last of them to arrive).
ALTER TABLE skipped ADD COLUMN last_sequence INTEGER;
UPDATE skipped SET last_sequence = sequence;
