-- PostgreSQL's side of the queries whose dialects differ (see queries.sql for the rest).

-- name: next_seqs
SELECT nextval('message_seq') FROM generate_series(1, ?)

-- name: queue_heads
-- Every claimable account's head of queue (domain.policy.queue_order: rank, seq), locked
-- in one statement; rows another process holds are skipped, not waited for.
SELECT {m_columns} FROM unnest(?::text[], ?::text[], ?::int[]) AS a(tenant_id, account_id, room)
CROSS JOIN LATERAL (
    SELECT * FROM messages WHERE tenant_id = a.tenant_id AND account_id = a.account_id
    AND status IN ('pending', 'scheduled', 'deferred') AND due_ts <= ?
    ORDER BY rank, seq LIMIT a.room FOR UPDATE SKIP LOCKED) m

-- name: lock_key
SELECT pg_advisory_xact_lock(?)

-- name: notify
SELECT pg_notify(?, ?)

-- name: fold_status_counts
-- One row per (tenant, status) for the deltas committed so far; one process at a time
-- (the others skip: their deltas are folded next time).
WITH folding AS (SELECT pg_try_advisory_xact_lock(?) AS mine),
gone AS (
    DELETE FROM status_counts WHERE (SELECT mine FROM folding)
    RETURNING tenant_id, status, n)
INSERT INTO status_counts (tenant_id, status, n)
SELECT tenant_id, status, SUM(n) FROM gone GROUP BY tenant_id, status HAVING SUM(n) <> 0

-- name: finished_per_minute
-- The status condition repeats the partial index's, so messages_final serves the range.
SELECT (floor(final_ts / 60) * 60)::bigint AS minute, tenant_id, status, COUNT(*)
FROM messages WHERE status IN ('sent', 'error', 'unknown') AND final_ts >= ?
GROUP BY minute, tenant_id, status ORDER BY minute, tenant_id, status

-- name: fold_rate_total
-- One row for the key's deltas committed so far (under the key's advisory lock).
WITH gone AS (DELETE FROM rate_totals WHERE key = ? RETURNING n)
INSERT INTO rate_totals (key, n) SELECT ?, SUM(n) FROM gone HAVING COUNT(*) > 0
