-- The queries both engines run as written (? placeholders). Status sets: queued =
-- ('pending', 'scheduled', 'deferred'), final = ('sent', 'error', 'unknown').

-- name: suspensions
SELECT batch_code FROM suspensions WHERE tenant_id = ?

-- name: pauses
SELECT tenant_id, account_id, failures, until_ts, reason FROM account_pauses

-- name: account_pause
SELECT tenant_id, account_id, failures, until_ts, reason FROM account_pauses
WHERE tenant_id = ? AND account_id = ?

-- name: upsert_message
-- Replaces a message only where domain.lifecycle.resubmission_refusal allows it (not
-- sent, not in flight, not a possible duplicate); which rows it stored is read back.
INSERT INTO messages (tenant_id, id, account_id, priority, rank, seq, status, due_ts,
    batch_code, message_id, date_ts, spec, created_ts, updated_ts, wait_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant_id, id) DO UPDATE SET account_id = excluded.account_id,
    priority = excluded.priority, rank = excluded.rank, seq = excluded.seq,
    status = excluded.status, due_ts = excluded.due_ts, batch_code = excluded.batch_code,
    message_id = excluded.message_id, date_ts = excluded.date_ts, spec = excluded.spec,
    created_ts = excluded.created_ts, updated_ts = excluded.updated_ts, attempts = 0,
    possible_duplicate = FALSE, sent_ts = NULL, error_ts = NULL, final_ts = NULL,
    error = NULL, smtp_code = NULL, lease_owner = NULL, lease_token = NULL,
    lease_expires_ts = NULL, attempt_open = FALSE, wait_reason = excluded.wait_reason,
    wait_detail = NULL
WHERE messages.status NOT IN ('sent', 'sending', 'unknown')
    AND NOT messages.possible_duplicate

-- name: stored_versions
-- Of the listed tenants' listed ids (a pair not given may come too: it is skipped).
SELECT pk, tenant_id, id, seq, status, possible_duplicate FROM messages
WHERE tenant_id {in_list} AND id {in_list}

-- name: history_queued
INSERT INTO history (message_pk, event, ts) SELECT pk, 'queued', ? FROM messages
WHERE pk {in_list}

-- name: history_entry
INSERT INTO history (message_pk, event, ts, detail) VALUES (?, ?, ?, ?)

-- name: held_by_owner
-- Per sending account: a fallback's, for a message sent through one.
SELECT tenant_id, COALESCE(via_account_id, account_id), COUNT(*) FROM messages
WHERE status = 'sending' AND lease_owner = ?
GROUP BY tenant_id, COALESCE(via_account_id, account_id)

-- name: account_configs
SELECT tenant_id, id, data FROM accounts

-- name: claim
-- via_account_id: the fallback that sends the listed messages, or NULL.
UPDATE messages SET status = 'sending', lease_owner = ?, lease_token = ?,
    lease_expires_ts = ?, attempt_open = FALSE, updated_ts = ?, via_account_id = ?
WHERE pk {in_list}

-- name: holds_lease
-- The sending account (a fallback's, for a message sent through one).
SELECT tenant_id, COALESCE(via_account_id, account_id), batch_code, attempts, due_ts, attempt_open, id FROM messages
WHERE pk = ? AND lease_token = ? AND status = 'sending'

-- name: held_slot
SELECT MAX(ts) FROM rate_slots WHERE message_pk = ?

-- name: release_slots
DELETE FROM rate_slots WHERE message_pk = ?

-- name: release_listed_slots
DELETE FROM rate_slots WHERE message_pk {in_list}

-- name: rate_total
-- rate_totals: one row per key on SQLite, deltas to sum on PostgreSQL.
SELECT COALESCE(SUM(n), 0), COUNT(*) FROM rate_totals WHERE key = ?

-- name: nth_newest_slot
-- domain.policy.slot_free_at, in SQL: the limit-th newest reservation inside the window
-- (none: room), up to a horizon; reads at most `limit` index entries.
SELECT ts FROM rate_slots WHERE key = ? AND ts > ? AND ts <= ?
ORDER BY ts DESC LIMIT 1 OFFSET ?

-- name: forget_old_sends
DELETE FROM rate_slots WHERE key = ? AND ts <= ? AND message_pk IS NULL

-- name: reserve_slot
INSERT INTO rate_slots (key, ts, message_pk) VALUES (?, ?, ?)

-- name: consume_slots
UPDATE rate_slots SET message_pk = NULL, ts = CASE WHEN ts < ? THEN ? ELSE ts END
WHERE message_pk = ?

-- name: open_attempt
UPDATE messages SET attempt_open = TRUE, updated_ts = ?
WHERE pk = ? AND lease_token = ? AND status = 'sending' RETURNING attempts

-- name: apply_transition
UPDATE messages SET status = ?, due_ts = ?, attempts = ?, possible_duplicate = ?,
    error = ?, smtp_code = ?, sent_ts = COALESCE(?, sent_ts),
    error_ts = COALESCE(?, error_ts), final_ts = ?, lease_owner = NULL,
    lease_token = NULL, lease_expires_ts = NULL, attempt_open = ?, updated_ts = ?,
    wait_reason = ?, wait_detail = ?, via_account_id = NULL WHERE pk = ?

-- name: add_report
INSERT INTO reports (event_id, tenant_id, message_pk, payload, created_ts)
VALUES (?, ?, ?, ?, ?)

-- name: put_pause
INSERT INTO account_pauses (tenant_id, account_id, failures, until_ts, reason)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, account_id) DO UPDATE
SET failures = excluded.failures, until_ts = excluded.until_ts, reason = excluded.reason

-- name: clear_pause
DELETE FROM account_pauses WHERE tenant_id = ? AND account_id = ?

-- name: requeue
UPDATE messages SET status = ?, lease_owner = NULL, lease_token = NULL,
    lease_expires_ts = NULL, attempt_open = FALSE, updated_ts = ?, via_account_id = NULL
WHERE pk {in_list}

-- name: expired_leases
SELECT pk, attempts, due_ts, attempt_open FROM messages
WHERE status = 'sending' AND ((? AND lease_owner = ?) OR lease_expires_ts <= ?)

-- name: re_lease
UPDATE messages SET lease_owner = ?, lease_token = ?, lease_expires_ts = ? WHERE pk {in_list}
RETURNING {columns}

-- name: message
SELECT {columns} FROM messages WHERE tenant_id = ? AND id = ?

-- name: history
SELECT h.event, h.ts, h.detail FROM history h JOIN messages m ON m.pk = h.message_pk
WHERE m.tenant_id = ? AND m.id = ? ORDER BY h.pk

-- name: remove_history
DELETE FROM history WHERE message_pk {in_list}

-- name: remove_unacked_reports
DELETE FROM reports WHERE message_pk {in_list} AND acked_ts IS NULL

-- name: remove_reports
DELETE FROM reports WHERE message_pk {in_list}

-- name: remove_messages
DELETE FROM messages WHERE pk {in_list}

-- name: remove_bounce_records
DELETE FROM bounce_records WHERE message_pk {in_list}

-- name: message_states
-- In pk order: two deletes of overlapping sets lock their rows in one order.
SELECT pk, id, status FROM messages WHERE tenant_id = ? AND id {in_list} ORDER BY pk

-- name: next_due
SELECT (SELECT MIN(due_ts) FROM messages
        WHERE status IN ('pending', 'scheduled', 'deferred') AND due_ts > ?),
       (SELECT MIN(until_ts) FROM account_pauses WHERE until_ts > ?)

-- name: count_ahead
-- domain.policy.queue_order: (rank, seq).
SELECT COUNT(*) FROM messages WHERE tenant_id = ? AND account_id = ?
AND status IN ('pending', 'scheduled', 'deferred') AND due_ts <= ?
AND (rank < ? OR (rank = ? AND seq < ?))

-- name: not_final_in_tenant
SELECT COUNT(*) FROM messages WHERE tenant_id = ?
AND status NOT IN ('sent', 'error', 'unknown')

-- name: add_suspension
INSERT INTO suspensions (tenant_id, batch_code) VALUES (?, ?) ON CONFLICT DO NOTHING

-- name: remove_suspension
DELETE FROM suspensions WHERE tenant_id = ? AND batch_code = ?

-- name: suspend_queued
UPDATE messages SET status = 'suspended', updated_ts = ?
WHERE tenant_id = ? AND status IN ('pending', 'scheduled', 'deferred')

-- name: suspended_chunk
SELECT pk, attempts, due_ts, batch_code, seq FROM messages WHERE tenant_id = ?
AND status = 'suspended' AND seq > ? ORDER BY seq LIMIT ?

-- name: set_status
UPDATE messages SET status = ?, updated_ts = ? WHERE pk = ?

-- name: purgeable
SELECT pk FROM messages WHERE status IN ('sent', 'error', 'unknown') AND final_ts < ?
AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.message_pk = messages.pk
                AND r.acked_ts IS NULL)

-- name: count_all
-- status_counts: one row per (tenant, status) on SQLite, deltas to sum on PostgreSQL; the
-- rows read and the (tenant, status) pairs they stand for say when to fold the deltas.
SELECT status, SUM(n), COUNT(*), COUNT(DISTINCT tenant_id) FROM status_counts GROUP BY status

-- name: count_tenant
SELECT status, SUM(n), COUNT(*), 1 FROM status_counts WHERE tenant_id = ? GROUP BY status

-- name: oldest_not_final
SELECT tenant_id, MIN(created_ts) FROM messages
WHERE status NOT IN ('sent', 'error', 'unknown') GROUP BY tenant_id

-- name: put_tenant
INSERT INTO tenants (id, data) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data

-- name: tenant
SELECT data FROM tenants WHERE id = ?

-- name: tenants
SELECT data FROM tenants ORDER BY id

-- name: delete_tenant
DELETE FROM tenants WHERE id = ?

-- name: delete_tenant_rows
DELETE FROM accounts WHERE tenant_id = ?;
DELETE FROM history WHERE message_pk IN (SELECT pk FROM messages WHERE tenant_id = ?);
DELETE FROM reports WHERE tenant_id = ?;
DELETE FROM rate_slots WHERE message_pk IN (SELECT pk FROM messages WHERE tenant_id = ?);
DELETE FROM messages WHERE tenant_id = ?;
DELETE FROM account_pauses WHERE tenant_id = ?;
DELETE FROM suspensions WHERE tenant_id = ?;
DELETE FROM tenant_keys WHERE tenant_id = ?;
DELETE FROM report_leases WHERE tenant_id = ?;
DELETE FROM bounce_records WHERE tenant_id = ?;
DELETE FROM suppressions WHERE tenant_id = ?

-- name: delete_scope_keys
DELETE FROM idempotency WHERE scope = ?

-- name: other_accounts
SELECT id, data FROM accounts WHERE tenant_id = ? AND id != ?

-- name: set_account_data
UPDATE accounts SET data = ? WHERE tenant_id = ? AND id = ?

-- name: put_account
INSERT INTO accounts (tenant_id, id, data) VALUES (?, ?, ?)
ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data

-- name: account
SELECT data FROM accounts WHERE tenant_id = ? AND id = ?

-- name: accounts
SELECT data FROM accounts WHERE tenant_id = ? ORDER BY id

-- name: waiting_in_account
SELECT {columns} FROM messages WHERE tenant_id = ? AND account_id = ?
AND status IN ('pending', 'scheduled', 'deferred', 'suspended')

-- name: delete_account
DELETE FROM accounts WHERE tenant_id = ? AND id = ?

-- name: put_tenant_key
INSERT INTO tenant_keys (tenant_id, digest, expires_ts) VALUES (?, ?, ?)
ON CONFLICT (tenant_id) DO UPDATE SET digest = excluded.digest, expires_ts = excluded.expires_ts

-- name: tenant_key
SELECT tenant_id, digest, expires_ts FROM tenant_keys WHERE digest = ?

-- name: delete_tenant_key
DELETE FROM tenant_keys WHERE tenant_id = ?

-- name: forget_expired_keys
DELETE FROM idempotency WHERE created_ts <= ?

-- name: start_key
-- Insert first: of two requests with one key, exactly one inserts.
INSERT INTO idempotency (scope, key, fingerprint, created_ts, owner) VALUES (?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING

-- name: key_record
SELECT fingerprint, status, body, created_ts FROM idempotency WHERE scope = ? AND key = ?

-- name: restart_key
UPDATE idempotency SET fingerprint = ?, created_ts = ?, status = NULL, body = NULL, owner = ?
WHERE scope = ? AND key = ?

-- name: release_keys
DELETE FROM idempotency WHERE owner = ? AND status IS NULL

-- name: finish_key
UPDATE idempotency SET status = ?, body = ? WHERE scope = ? AND key = ?

-- name: forget_key
DELETE FROM idempotency WHERE scope = ? AND key = ? AND status IS NULL

-- name: pending_reports
SELECT seq, payload FROM reports WHERE tenant_id = ? AND acked_ts IS NULL ORDER BY seq LIMIT ?

-- name: tenants_with_pending_reports
SELECT DISTINCT tenant_id FROM reports WHERE acked_ts IS NULL

-- name: acknowledge_reports
-- Found by their event ids (SQLite would otherwise scan the tenant's whole backlog).
UPDATE reports SET acked_ts = ?
WHERE seq IN (SELECT seq FROM reports WHERE event_id {in_list})
AND tenant_id = ? AND acked_ts IS NULL

-- name: report_backlog
SELECT COUNT(*), MIN(created_ts) FROM reports WHERE tenant_id = ? AND acked_ts IS NULL

-- name: report_backlogs
SELECT tenant_id, COUNT(*), MIN(created_ts) FROM reports WHERE acked_ts IS NULL
GROUP BY tenant_id

-- name: lease_reports
INSERT INTO report_leases (tenant_id, owner, expires_ts) VALUES (?, ?, ?)
ON CONFLICT (tenant_id) DO UPDATE SET owner = excluded.owner, expires_ts = excluded.expires_ts
WHERE report_leases.owner = excluded.owner OR report_leases.expires_ts <= ? RETURNING 1

-- name: release_reports
DELETE FROM report_leases WHERE tenant_id = ? AND owner = ?

-- --- bounces and suppression (adapters/sql/bounces.py) ---------------------------------

-- name: instance_secret
SELECT value FROM instance_secrets WHERE name = ?

-- name: put_instance_secret
INSERT INTO instance_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING

-- name: message_by_pk
SELECT {columns} FROM messages WHERE pk = ?

-- name: bounce_records_of
SELECT m.id, b.data FROM bounce_records b JOIN messages m ON m.pk = b.message_pk
WHERE m.tenant_id = ? AND m.id {in_list} ORDER BY b.pk

-- name: bounce_records_by_pk
SELECT data FROM bounce_records WHERE message_pk = ? ORDER BY pk

-- name: mailbox_seen
SELECT uid, outcome FROM mailbox_entries WHERE mailbox = ? AND uidvalidity = ? AND uid {in_list}

-- name: add_mailbox_entry
INSERT INTO mailbox_entries (mailbox, uidvalidity, uid, outcome, tenant_id, summary, seen_ts)
VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mailbox, uidvalidity, uid) DO NOTHING

-- name: unparsed_reports
SELECT mailbox, uid, summary, seen_ts, tenant_id FROM mailbox_entries
WHERE outcome = 'unparsed' AND (tenant_id = ? OR ? = '') ORDER BY seen_ts DESC LIMIT ?

-- name: add_bounce_record
INSERT INTO bounce_records (message_pk, tenant_id, address_key, kind, counted, ts, data)
VALUES (?, ?, ?, ?, ?, ?, ?)

-- name: counted_bounces
-- Per listed address, the messages that bounced there within the window with a bounce
-- the soft-bounce rule counts (domain.bounces.counts_toward_rule, suppression_after).
SELECT address_key, COUNT(DISTINCT message_pk) FROM bounce_records
WHERE tenant_id = ? AND counted = 1 AND ts > ? AND address_key {in_list}
GROUP BY address_key

-- name: suppressions_of
SELECT address_key, data FROM suppressions WHERE tenant_id = ? AND address_key {in_list}

-- name: put_suppression
INSERT INTO suppressions (tenant_id, address_key, reason, expires_ts, data)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, address_key) DO UPDATE
SET reason = excluded.reason, expires_ts = excluded.expires_ts, data = excluded.data

-- name: suppressed_among
SELECT address_key FROM suppressions
WHERE tenant_id = ? AND address_key {in_list} AND (expires_ts IS NULL OR expires_ts > ?)

-- name: remove_suppression
DELETE FROM suppressions
WHERE tenant_id = ? AND address_key = ? AND (expires_ts IS NULL OR expires_ts > ?)

-- name: list_suppressions
SELECT address_key, data FROM suppressions
WHERE tenant_id = ? AND (expires_ts IS NULL OR expires_ts > ?) AND address_key > ?
AND (reason = ? OR ? = '') AND lower(address_key) LIKE ? ESCAPE '!'
ORDER BY address_key LIMIT ?

-- name: count_suppressions
SELECT tenant_id, COUNT(*) FROM suppressions
WHERE expires_ts IS NULL OR expires_ts > ? GROUP BY tenant_id

-- name: watch_pec
INSERT INTO pec_pending (message_pk, tenant_id, acceptance_due_ts, delivery_due_ts,
    recipients) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (message_pk) DO UPDATE SET acceptance_due_ts = excluded.acceptance_due_ts,
    delivery_due_ts = excluded.delivery_due_ts, recipients = excluded.recipients

-- name: message_by_message_id
-- The newest of an account's messages with that Message-ID (a receipt names its message so).
SELECT {columns} FROM messages WHERE tenant_id = ? AND message_id = ? AND account_id = ?
ORDER BY pk DESC LIMIT 1

-- name: pec_mark
INSERT INTO pec_marks (message_pk, mark) VALUES (?, ?) ON CONFLICT DO NOTHING

-- name: pec_marks_of
SELECT mark FROM pec_marks WHERE message_pk = ?

-- name: pec_stop_acceptance
UPDATE pec_pending SET acceptance_due_ts = NULL WHERE message_pk = ?

-- name: pec_forget
DELETE FROM pec_pending WHERE message_pk = ?

-- name: pec_forget_marks
DELETE FROM pec_marks WHERE message_pk = ?

-- name: pec_due
-- Messages with a deadline passed: (acceptance deadline, delivery deadline, recipients,
-- the message).
SELECT p.acceptance_due_ts, p.delivery_due_ts, p.recipients, {m_columns}
FROM pec_pending p JOIN messages m ON m.pk = p.message_pk
WHERE p.acceptance_due_ts <= ? OR p.delivery_due_ts <= ?
ORDER BY p.message_pk LIMIT ?

-- name: pec_orphans
-- What retention removed the message of.
DELETE FROM pec_pending
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.pk = pec_pending.message_pk)

-- name: pec_orphan_marks
DELETE FROM pec_marks
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.pk = pec_marks.message_pk)
