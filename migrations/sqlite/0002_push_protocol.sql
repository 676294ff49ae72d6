-- The push protocol: enrollments, devices, challenges, their push deliveries (an outbox),
-- used proof ids, and the webhook outbox. Times are Unix milliseconds.

ALTER TABLE users ADD COLUMN push_locked_at INTEGER;
-- Bumped by every challenge creation: the UPDATE serialises concurrent creations per user.
ALTER TABLE users ADD COLUMN challenge_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE enrollments (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the token
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    device_id   TEXT
);
CREATE INDEX enrollments_by_expiry ON enrollments (expires_at);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    name           TEXT NOT NULL,
    platform       TEXT NOT NULL,
    jwk            TEXT NOT NULL,         -- the device's public key (JSON)
    thumbprint     TEXT NOT NULL,
    push_provider  TEXT NOT NULL,         -- apns | fcm | none
    push_token     TEXT,
    created_at     INTEGER NOT NULL,
    last_seen_at   INTEGER,
    revoked_at     INTEGER
);
CREATE INDEX devices_by_user ON devices (user_id);
-- One active device per key, even when two enrollments race.
CREATE UNIQUE INDEX devices_active_key ON devices (thumbprint) WHERE revoked_at IS NULL;

CREATE TABLE challenges (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    factor           TEXT NOT NULL,       -- push | sms | email
    status           TEXT NOT NULL,       -- pending approved denied fraud_reported expired cancelled failed
    reason           TEXT,
    title            TEXT NOT NULL,
    details          TEXT NOT NULL,       -- JSON array
    context          TEXT NOT NULL,       -- JSON object
    number           INTEGER,                  -- number matching: the correct choice
    jws              TEXT,                -- the server-signed challenge
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    decided_at       INTEGER,
    device_id        TEXT,                -- the device that answered
    evidence         TEXT,                -- the device's response JWS
    user_verified    INTEGER,
    api_key_id       TEXT NOT NULL,
    idempotency_key  TEXT,
    request_hash     TEXT
);
CREATE INDEX challenges_by_user ON challenges (user_id, created_at);
CREATE INDEX challenges_pending ON challenges (status, expires_at);
CREATE UNIQUE INDEX challenges_idempotency ON challenges (api_key_id, idempotency_key);

-- One row per (challenge, device): the audience of the challenge and the push outbox.
CREATE TABLE push_deliveries (
    challenge_id     TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    provider         TEXT NOT NULL,       -- apns | fcm | none
    status           TEXT NOT NULL,       -- pending | sent | failed | not_sent | cancelled
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    claimed_until    INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (challenge_id, device_id)
);
CREATE INDEX push_deliveries_by_device ON push_deliveries (device_id, challenge_id);
CREATE INDEX push_deliveries_due ON push_deliveries (status, next_attempt_at);

-- Proof-of-possession ids seen recently, per device: a reused jti is a replay.
CREATE TABLE proof_jtis (
    device_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, jti)
);
CREATE INDEX proof_jtis_by_expiry ON proof_jtis (expires_at);

CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,    -- also the webhook-id header: stable across retries
    endpoint         TEXT NOT NULL,       -- the configured endpoint's URL
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,       -- the exact JSON body
    status           TEXT NOT NULL,       -- pending | delivered | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    claimed_until    INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);
