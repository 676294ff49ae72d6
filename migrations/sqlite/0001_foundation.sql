-- Foundation: API keys, users, the audit log and server-wide settings.
-- Times are Unix milliseconds (INTEGER), so SQL stays portable between SQLite and PostgreSQL.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the secret; the secret is never stored
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,     -- the RP's own id
    display_name    TEXT,
    phone           TEXT,                 -- E.164
    phone_verified  INTEGER NOT NULL DEFAULT 0,
    email           TEXT,
    email_verified  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    user_id  TEXT,
    actor    TEXT NOT NULL,
    data     TEXT NOT NULL               -- JSON object
);
CREATE INDEX events_by_user ON events (user_id, seq);

-- The audit log is append-only: the database itself refuses edits.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- One-off facts about this installation (for example that the bootstrap key was issued).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
