-- A command interrupted by the agent dying is resumed; it is given up only when it keeps dying
-- without progress. `deaths` counts the deaths since `deaths_since` with the same `checkpoint`
-- (a fingerprint of the command's progress files); progress or an hour without a death starts
-- the count again.
ALTER TABLE commands ADD COLUMN deaths INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN deaths_since INTEGER;
ALTER TABLE commands ADD COLUMN checkpoint TEXT;
