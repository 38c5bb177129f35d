-- Trust received at sea: operator certificates (delivered by trust_key or carried by bundles),
-- key revocations (revoke_key), and this vessel's own rotated signing keys.
CREATE TABLE trust_certs (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    serial      TEXT NOT NULL,
    issued      TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    certificate TEXT NOT NULL,
    source      TEXT NOT NULL,
    added_at    INTEGER NOT NULL
);
CREATE TABLE trust_revoked (
    key_id      TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    last_good   TEXT NOT NULL,
    by_command  TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL
);
CREATE TABLE vessel_keys (
    key_id      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    from_seq    INTEGER NOT NULL,
    rotation    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
