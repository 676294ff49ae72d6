-- Fallback codes by SMS and email, and the shared rate counters that guard them.
-- Times are Unix milliseconds.

-- One row per OTP challenge: where its code went, the code's HMAC (never the code), and the
-- counters that bound guessing and resending.
CREATE TABLE otp_codes (
    challenge_id     TEXT PRIMARY KEY,
    channel          TEXT NOT NULL,         -- sms | email
    destination      TEXT NOT NULL,         -- the E.164 number or email address the code went to
    code_hash        TEXT NOT NULL,         -- hex HMAC-SHA256(pepper, challenge id || code)
    code_ttl         INTEGER NOT NULL,      -- how long each code lives (ms); a resend restarts it
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    resends          INTEGER NOT NULL DEFAULT 0,
    last_sent_at     INTEGER NOT NULL,
    provider         TEXT,                  -- the provider that delivered the latest code
    message_id       TEXT,                  -- that provider's message id
    delivery_error   TEXT,                  -- why the latest send failed, when it did
    used_at          INTEGER
);

-- Fixed-window counters (per number, per country calling code, per email address, ...):
-- incremented atomically, shared by every replica.
CREATE TABLE rate_counters (
    name          TEXT NOT NULL,            -- e.g. sms:number:+14155550123:600
    window_start  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (name, window_start)
);
CREATE INDEX rate_counters_by_expiry ON rate_counters (expires_at);
