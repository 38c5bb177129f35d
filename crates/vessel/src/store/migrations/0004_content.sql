-- Course content kept on board by hash (the content store's index; the files are in
-- STATE_DIR/content/), and content members of delta bundles the vessel lacks and asks shore for.
CREATE TABLE content (
    sha1        TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    used_at     INTEGER NOT NULL
);
CREATE INDEX content_used ON content(used_at);
CREATE TABLE needed_files (
    bundle_id   TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    since       INTEGER NOT NULL,
    asked_batch INTEGER,
    asked_at    INTEGER,
    PRIMARY KEY (bundle_id, sha256)
);
