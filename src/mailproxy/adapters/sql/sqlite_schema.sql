-- SQLite's schema history: section N brings a file from version N-1 to N
-- (PRAGMA user_version). Never edit a released section; add one.

-- name: 1
CREATE TABLE "tenants" ("id" TEXT PRIMARY KEY, "data" BLOB NOT NULL);
CREATE TABLE "accounts" (
   "tenant_id" TEXT, "id" TEXT, "data" BLOB NOT NULL, PRIMARY KEY ("tenant_id", "id"));
CREATE TABLE "messages" (
   "pk" INTEGER PRIMARY KEY,
   "tenant_id" TEXT NOT NULL, "id" TEXT NOT NULL, "account_id" TEXT NOT NULL,
   "priority" INTEGER NOT NULL, "seq" INTEGER NOT NULL, "status" TEXT NOT NULL,
   "due_ts" REAL NOT NULL, "batch_code" TEXT, "message_id" TEXT NOT NULL,
   "date_ts" REAL NOT NULL, "spec" BLOB NOT NULL,
   "attempts" INTEGER NOT NULL DEFAULT 0, "possible_duplicate" INTEGER NOT NULL DEFAULT 0,
   "created_ts" REAL, "updated_ts" REAL, "sent_ts" REAL, "error_ts" REAL, "final_ts" REAL,
   "error" TEXT, "smtp_code" INTEGER, "lease_owner" TEXT, "lease_token" TEXT,
   "lease_expires_ts" REAL, "attempt_open" INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX "idx_messages_tenant_id_id" ON "messages" ("tenant_id", "id");
CREATE INDEX "idx_messages_tenant_id_seq" ON "messages" ("tenant_id", "seq");
CREATE INDEX messages_queue ON messages(priority, seq)
    WHERE status IN ('pending', 'scheduled', 'deferred');
CREATE INDEX messages_due ON messages(due_ts) WHERE status IN ('pending', 'scheduled', 'deferred');
CREATE INDEX messages_leased ON messages(lease_owner) WHERE status = 'sending';
CREATE TABLE "history" (
   "pk" INTEGER PRIMARY KEY, "message_pk" INTEGER NOT NULL, "event" TEXT NOT NULL,
   "ts" REAL NOT NULL, "detail" TEXT);
CREATE INDEX "idx_history_message_pk" ON "history" ("message_pk");
CREATE TABLE "reports" (
   "seq" INTEGER PRIMARY KEY, "event_id" TEXT NOT NULL, "tenant_id" TEXT NOT NULL,
   "message_pk" INTEGER NOT NULL, "payload" BLOB NOT NULL, "created_ts" REAL NOT NULL,
   "acked_ts" REAL);
CREATE UNIQUE INDEX "idx_reports_event_id" ON "reports" ("event_id");
CREATE INDEX "idx_reports_message_pk" ON "reports" ("message_pk");
CREATE INDEX reports_pending ON reports(tenant_id, seq) WHERE acked_ts IS NULL;
CREATE TABLE "counters" ("name" TEXT PRIMARY KEY, "value" INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('seq', 0);

-- name: 2
-- Queue policy: ranks with aging (600 s per priority step: domain.policy.DEFAULT_AGING_S),
-- per-account queues, rate-limit reservations, account pauses, suspensions.
ALTER TABLE messages ADD COLUMN rank REAL NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN wait_reason TEXT;
ALTER TABLE messages ADD COLUMN wait_detail TEXT;
UPDATE messages SET rank = created_ts + priority * 600.0;
DROP INDEX messages_queue;
CREATE INDEX messages_account_queue ON messages(tenant_id, account_id, rank, seq)
    WHERE status IN ('pending', 'scheduled', 'deferred');
CREATE INDEX messages_final ON messages(final_ts) WHERE status IN ('sent', 'error', 'unknown');
CREATE TABLE rate_slots (key TEXT NOT NULL, ts REAL NOT NULL, message_pk INTEGER);
CREATE INDEX rate_slots_key ON rate_slots(key, ts);
CREATE INDEX rate_slots_message ON rate_slots(message_pk);
CREATE TABLE account_pauses (tenant_id TEXT NOT NULL, account_id TEXT NOT NULL,
    failures INTEGER NOT NULL, until_ts REAL NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (tenant_id, account_id));
CREATE TABLE suspensions (tenant_id TEXT NOT NULL, batch_code TEXT NOT NULL,
    PRIMARY KEY (tenant_id, batch_code));

-- name: 3
-- Rate-limit totals: the live reservations of each window key, kept by triggers so that
-- every path that adds or removes a reservation keeps them right. A key whose total is
-- below a window's limit has room without scanning its reservations.
CREATE TABLE rate_totals (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO rate_totals (key, n) SELECT key, COUNT(*) FROM rate_slots GROUP BY key;
CREATE TRIGGER rate_slots_added AFTER INSERT ON rate_slots BEGIN
    INSERT INTO rate_totals (key, n) VALUES (NEW.key, 1)
    ON CONFLICT (key) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER rate_slots_removed AFTER DELETE ON rate_slots BEGIN
    UPDATE rate_totals SET n = n - 1 WHERE key = OLD.key; END;

-- name: 4
-- Access: tenant API key digests and idempotency records.
CREATE TABLE tenant_keys (tenant_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE,
    expires_ts REAL);
CREATE TABLE idempotency (scope TEXT NOT NULL, key TEXT NOT NULL,
    fingerprint TEXT NOT NULL, status INTEGER, body BLOB, created_ts REAL NOT NULL,
    PRIMARY KEY (scope, key));
CREATE INDEX idempotency_created ON idempotency(created_ts);

-- name: 5
-- Report leases: which process delivers a tenant's events, until when.
CREATE TABLE report_leases (tenant_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
    expires_ts REAL NOT NULL);

-- name: 6
-- Message counts per tenant and status, kept by triggers on every path that adds,
-- changes or removes a message: /status, /metrics and the status page read them without
-- counting the table.
CREATE TABLE status_counts (tenant_id TEXT NOT NULL, status TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (tenant_id, status));
INSERT INTO status_counts (tenant_id, status, n)
    SELECT tenant_id, status, COUNT(*) FROM messages GROUP BY tenant_id, status;
CREATE TRIGGER messages_counted AFTER INSERT ON messages BEGIN
    INSERT INTO status_counts (tenant_id, status, n) VALUES (NEW.tenant_id, NEW.status, 1)
    ON CONFLICT (tenant_id, status) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER messages_uncounted AFTER DELETE ON messages BEGIN
    UPDATE status_counts SET n = n - 1
    WHERE tenant_id = OLD.tenant_id AND status = OLD.status; END;
CREATE TRIGGER messages_recounted AFTER UPDATE OF status, tenant_id ON messages
    WHEN OLD.status IS NOT NEW.status OR OLD.tenant_id IS NOT NEW.tenant_id BEGIN
    UPDATE status_counts SET n = n - 1
    WHERE tenant_id = OLD.tenant_id AND status = OLD.status;
    INSERT INTO status_counts (tenant_id, status, n) VALUES (NEW.tenant_id, NEW.status, 1)
    ON CONFLICT (tenant_id, status) DO UPDATE SET n = n + 1; END;

-- name: 7
-- Who started an unfinished idempotency record, so that a restarted worker can release
-- the keys its previous process died holding.
ALTER TABLE idempotency ADD COLUMN owner TEXT;

-- name: 8
-- The indexes PostgreSQL has, by the same names: leased messages by their lease's expiry
-- (recovery takes over the expired ones) and by their owner (each claim counts what its
-- process holds; without this index that count would scan the table).
DROP INDEX idx_messages_tenant_id_seq;
CREATE INDEX messages_tenant_seq ON messages(tenant_id, seq);
DROP INDEX messages_leased;
CREATE INDEX messages_leased ON messages(lease_expires_ts) WHERE status = 'sending';
CREATE INDEX messages_owned ON messages(lease_owner) WHERE status = 'sending';
DROP INDEX idx_history_message_pk;
CREATE INDEX history_message ON history(message_pk);
DROP INDEX idx_reports_message_pk;
CREATE INDEX reports_message ON reports(message_pk);

-- name: 9
-- Bounces and suppression: what bounce mailboxes and SMTP refusals said about sent
-- messages, the tenants' suppression lists, the mailbox messages already handled (by
-- mailbox, UIDVALIDITY and UID: each is applied once), and the database's own secrets
-- (the key of the correlation tokens).
CREATE TABLE bounce_records (
    pk INTEGER PRIMARY KEY, message_pk INTEGER NOT NULL, tenant_id TEXT NOT NULL,
    address_key TEXT, kind TEXT NOT NULL, counted INTEGER NOT NULL, ts REAL NOT NULL,
    data BLOB NOT NULL);
CREATE INDEX bounce_records_message ON bounce_records(message_pk);
CREATE INDEX bounce_records_counted ON bounce_records(tenant_id, address_key, ts)
    WHERE counted = 1;
CREATE TABLE suppressions (
    tenant_id TEXT NOT NULL, address_key TEXT NOT NULL, reason TEXT NOT NULL,
    expires_ts REAL, data BLOB NOT NULL, PRIMARY KEY (tenant_id, address_key));
CREATE TABLE mailbox_entries (
    mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    outcome TEXT NOT NULL, tenant_id TEXT, summary TEXT NOT NULL, seen_ts REAL NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid));
CREATE INDEX mailbox_entries_unparsed ON mailbox_entries(seen_ts) WHERE outcome = 'unparsed';
CREATE TABLE instance_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);

-- name: 10
-- Failover between accounts: the fallback a claim chose to send a message through
-- (NULL: its own account), kept while the message is leased.
ALTER TABLE messages ADD COLUMN via_account_id TEXT;

-- name: 11
-- PEC receipts: the deadlines of a message sent by a PEC account (acceptance, and a
-- delivery or error receipt of each of its recipients), what its receipts said so far
-- (a mark each, once), and the messages by Message-ID, which is how a receipt names one.
CREATE TABLE pec_pending (
    message_pk INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,
    acceptance_due_ts REAL, delivery_due_ts REAL NOT NULL, recipients integer NOT NULL);
CREATE INDEX pec_pending_acceptance ON pec_pending (acceptance_due_ts)
    WHERE acceptance_due_ts IS NOT NULL;
CREATE INDEX pec_pending_delivery ON pec_pending (delivery_due_ts);
CREATE TABLE pec_marks (
    message_pk INTEGER NOT NULL, mark TEXT NOT NULL, PRIMARY KEY (message_pk, mark));
CREATE INDEX messages_message_id ON messages (tenant_id, message_id);
