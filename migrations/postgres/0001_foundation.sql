-- Foundation: API keys, users, the audit log and server-wide settings.
-- Times are Unix milliseconds (BIGINT), so SQL stays portable between SQLite and PostgreSQL.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the secret; the secret is never stored
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,     -- the RP's own id
    display_name    TEXT,
    phone           TEXT,                 -- E.164
    phone_verified  BIGINT NOT NULL DEFAULT 0,
    email           TEXT,
    email_verified  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE events (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    user_id  TEXT,
    actor    TEXT NOT NULL,
    data     TEXT NOT NULL               -- JSON object
);
CREATE INDEX events_by_user ON events (user_id, seq);

-- The audit log is append-only: the database itself refuses edits.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- One-off facts about this installation (for example that the bootstrap key was issued).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
