-- Passkeys (WebAuthn credentials), the WebAuthn user handle of each user, and the state of
-- registration and authentication ceremonies between their two calls. Times are Unix milliseconds.

-- The user handle an authenticator stores with a discoverable credential and returns on a
-- usernameless sign-in: random (a UUID), never the RP's user id, and new for a user id that
-- was deleted and created again, so old credentials cannot sign in to the new account.
CREATE TABLE passkey_users (
    user_id  TEXT PRIMARY KEY,
    handle   TEXT NOT NULL UNIQUE
);

CREATE TABLE passkeys (
    id               TEXT PRIMARY KEY,     -- pk_...
    user_id          TEXT NOT NULL,
    credential_id    TEXT NOT NULL UNIQUE, -- base64url; one account per credential
    name             TEXT NOT NULL,
    credential       TEXT NOT NULL,        -- the verified public key credential (JSON), counter included
    sign_count       INTEGER NOT NULL,
    backup_eligible  INTEGER NOT NULL,
    backed_up        INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER
);
CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

-- One row per started ceremony; finishing it sets used_at once (a single conditional UPDATE),
-- so a ceremony can be finished exactly once, on any replica.
CREATE TABLE passkey_ceremonies (
    id          TEXT PRIMARY KEY,          -- cer_...
    kind        TEXT NOT NULL,             -- registration | authentication
    user_id     TEXT,                      -- absent for a discoverable (usernameless) sign-in
    state       TEXT NOT NULL,             -- the ceremony state (JSON): its challenge and what it allows
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
