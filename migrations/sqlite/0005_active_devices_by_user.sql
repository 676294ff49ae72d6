-- A user's active devices in enrollment order, read on every new push challenge. Without this
-- index PostgreSQL may answer that read by scanning devices_active_key, whose predicate the
-- query implies, in full (every active device on the server) and ANDing it with
-- devices_by_user: a cost that grows with the number of devices.
CREATE INDEX devices_active_by_user ON devices (user_id, created_at) WHERE revoked_at IS NULL;
