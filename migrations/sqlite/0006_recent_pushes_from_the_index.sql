-- A new push challenge reads the user's push challenges of the last 10 minutes (the
-- anti-fatigue count, and one still pending to supersede). With the status and expiry in the
-- index beside the creation time, that read is answered from the index's few adjacent
-- entries instead of one table page per challenge. SQLite's readers start every read with
-- an empty page cache once another connection has written, so each page a read touches is
-- read again from the file. Every query that used the old index uses this one by its prefix.
DROP INDEX challenges_by_user;
CREATE INDEX challenges_by_user ON challenges (user_id, created_at, factor, status, expires_at);
