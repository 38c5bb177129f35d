-- What the vessel has told shore of each command's state: the state and reason last put in a
-- progress batch (batches are resent until acknowledged, so a report in one is delivered).
CREATE TABLE reported (
    bundle_id   TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    batch_seq   INTEGER NOT NULL,
    PRIMARY KEY (bundle_id, idx)
);
