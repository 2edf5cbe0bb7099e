-- The sync service's indexes, on top of change tracking (idempotent; install() runs
-- install_change_tracking first, which adds the _sk_xid column they name).
-- Each feed reads one user's rows in (_sk_xid, id) order: with these, a first sync
-- and a delta are both a range scan of that user's rows, not a walk of everyone's
-- changes filtered afterwards. The full refetch (primitives=False) uses them too.
CREATE INDEX IF NOT EXISTS conversations_sync ON conversations (user_id, _sk_xid, id);
CREATE INDEX IF NOT EXISTS messages_sync ON messages (user_id, _sk_xid, id);
