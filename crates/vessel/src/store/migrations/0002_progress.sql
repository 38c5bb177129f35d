-- Progress capture, the outbox, batches, echo suppression and the uplink's own state.

-- The last state captured from Moodle, per local natural key (kind, Moodle user id, object id:
-- cmid, course id or grade item id). The keys in force at capture time are kept so that a row
-- that disappears later (course reset, deleted user) can still be reported as removed.
CREATE TABLE capture_state (
    kind     INTEGER NOT NULL,
    userid   INTEGER NOT NULL,
    objid    INTEGER NOT NULL,
    value    TEXT NOT NULL,
    vtime    INTEGER NOT NULL,
    ukey     TEXT,
    ckey     TEXT,
    ikey     TEXT,
    PRIMARY KEY (kind, userid, objid)
) WITHOUT ROWID;

-- Records waiting for shore, keyed by record id (a record captured twice is one row). seq is the
-- capture order; batch_seq is set when a batch takes the record, and the row is deleted only
-- when shore acknowledges that batch. One B-tree and no secondary index: the outbox is small in
-- steady state, and a first capture of a large site must queue fast.
CREATE TABLE outbox (
    record_id     BLOB PRIMARY KEY,
    seq           INTEGER NOT NULL,
    course_key    TEXT NOT NULL,
    record        BLOB NOT NULL,   -- Record::to_bytes: kind, keys, legacy ids, value, time
    captured_at   INTEGER NOT NULL,
    batch_seq     INTEGER
) WITHOUT ROWID;

-- Built batches, kept byte for byte until acknowledged, so a retry sends the same envelope.
-- seq is this vessel's monotonic batch sequence (the envelope's sequence to 'shore').
CREATE TABLE batches (
    seq          INTEGER PRIMARY KEY,
    envelope_id  TEXT NOT NULL,
    records      INTEGER NOT NULL,
    envelope     BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    written_at   INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);

-- Changes that could not be keyed; retried at every capture, released when keyable.
CREATE TABLE progress_quarantine (
    kind     INTEGER NOT NULL,
    userid   INTEGER NOT NULL,
    objid    INTEGER NOT NULL,
    value    TEXT NOT NULL,
    vtime    INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (kind, userid, objid, value, vtime)
) WITHOUT ROWID;

-- Progress that came from shore (import_progress). A captured change equal to a row here is an
-- echo: it is consumed and never queued (law 2).
CREATE TABLE imported (
    kind        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    course_key  TEXT NOT NULL,
    item_key    TEXT NOT NULL,
    value       TEXT NOT NULL,
    command_id  TEXT NOT NULL,
    imported_at INTEGER NOT NULL,
    PRIMARY KEY (kind, user_key, course_key, item_key)
) WITHOUT ROWID;

-- Small facts about the link and the last capture (key/value).
CREATE TABLE uplink (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Bytes that crossed the link per UTC day (YYYY-MM-DD), for the budgets.
CREATE TABLE traffic (
    day   TEXT PRIMARY KEY,
    up    INTEGER NOT NULL DEFAULT 0,
    down  INTEGER NOT NULL DEFAULT 0
);
