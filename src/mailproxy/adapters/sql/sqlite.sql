-- SQLite's side of the queries whose dialects differ (see queries.sql for the rest).

-- name: next_seq
UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value

-- name: account_head
-- domain.policy.queue_order: (rank, seq).
SELECT {columns} FROM messages WHERE tenant_id = ? AND account_id = ?
AND status IN ('pending', 'scheduled', 'deferred') AND due_ts <= ?
ORDER BY rank, seq LIMIT ?

-- name: finished_per_minute
-- The status condition repeats the partial index's, so messages_final serves the range.
SELECT CAST(final_ts / 60 AS INTEGER) * 60 AS minute, tenant_id, status, COUNT(*)
FROM messages WHERE status IN ('sent', 'error', 'unknown') AND final_ts >= ?
GROUP BY minute, tenant_id, status ORDER BY minute, tenant_id, status
