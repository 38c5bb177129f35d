-- Journal, audit trail, mappings and acknowledgements. Times are Unix seconds (UTC).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per verified bundle. state: waiting (sequence gap), ready (its commands may run),
-- done (every command finished), failed (finished, at least one command failed).
CREATE TABLE bundles (
    id              TEXT PRIMARY KEY,
    issuer          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    source_name     TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    received_at     INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('waiting','ready','done','failed')),
    reason          TEXT,
    late            INTEGER NOT NULL DEFAULT 0,
    archived        INTEGER NOT NULL DEFAULT 0,
    admitted_order  INTEGER,
    finished_at     INTEGER
);
CREATE UNIQUE INDEX bundles_stream_seq ON bundles(issuer, recipient, sequence);
CREATE INDEX bundles_state ON bundles(state, admitted_order);

-- One row per command of a bundle, in bundle order (idx from 0).
CREATE TABLE commands (
    bundle_id       TEXT NOT NULL REFERENCES bundles(id),
    idx             INTEGER NOT NULL,
    cmd_id          TEXT NOT NULL,
    type            TEXT NOT NULL,
    args            TEXT NOT NULL,
    files           TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                      ('ready','running','waiting','done','failed','superseded','duplicate')),
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (bundle_id, idx)
);
CREATE UNIQUE INDEX commands_id ON commands(cmd_id) WHERE state != 'duplicate';
CREATE INDEX commands_state ON commands(state);

-- Per (issuer, recipient) stream: the next sequence expected.
CREATE TABLE streams (
    issuer    TEXT NOT NULL,
    recipient TEXT NOT NULL,
    next_seq  INTEGER NOT NULL,
    PRIMARY KEY (issuer, recipient)
);

-- Sequences given up on after the gap timeout; a late arrival resolves its row.
CREATE TABLE skipped (
    issuer          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    skipped_at      INTEGER NOT NULL,
    resolved_bundle TEXT,
    resolved_at     INTEGER,
    PRIMARY KEY (issuer, recipient, sequence)
);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    bundle_id  TEXT,
    command_id TEXT,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_event ON audit(event, id);

-- Legacy ids to Moodle keys (set_mapping). src_* name the bundle stream that last wrote the row,
-- so that a late arrival never overwrites what a newer sequence of the same stream set.
CREATE TABLE mappings (
    kind          TEXT NOT NULL CHECK (kind IN ('category','course','activity')),
    legacy_id     TEXT NOT NULL,
    moodle_key    TEXT NOT NULL,
    course        TEXT NOT NULL DEFAULT '',
    src_issuer    TEXT NOT NULL,
    src_recipient TEXT NOT NULL,
    src_seq       INTEGER NOT NULL,
    command_id    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (kind, legacy_id)
);

-- Shore's acknowledgement watermark for the progress outbox (ack command).
CREATE TABLE acks (
    channel      TEXT PRIMARY KEY,
    acked_seq    INTEGER NOT NULL,
    bundle_id    TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);
