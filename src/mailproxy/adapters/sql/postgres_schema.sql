-- PostgreSQL's schema history: section N brings a database from version N-1 to N (table
-- schema_version). Never edit a released section; add one.

-- name: 1
CREATE TABLE tenants (id text PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE accounts (
    tenant_id text NOT NULL, id text NOT NULL, data bytea NOT NULL,
    PRIMARY KEY (tenant_id, id));
CREATE SEQUENCE message_seq;
CREATE TABLE messages (
    pk bigserial PRIMARY KEY,
    tenant_id text NOT NULL, id text NOT NULL, account_id text NOT NULL,
    priority integer NOT NULL, seq bigint NOT NULL, status text NOT NULL,
    due_ts double precision NOT NULL, batch_code text, message_id text NOT NULL,
    date_ts double precision NOT NULL, spec bytea NOT NULL,
    attempts integer NOT NULL DEFAULT 0, possible_duplicate boolean NOT NULL DEFAULT false,
    created_ts double precision NOT NULL, updated_ts double precision NOT NULL,
    sent_ts double precision, error_ts double precision, error text, smtp_code integer,
    lease_owner text, lease_token text, lease_expires_ts double precision,
    attempt_open boolean NOT NULL DEFAULT false, rank double precision NOT NULL,
    wait_reason text, wait_detail text, final_ts double precision,
    UNIQUE (tenant_id, id));
CREATE INDEX messages_tenant_seq ON messages (tenant_id, seq);
CREATE INDEX messages_account_queue ON messages (tenant_id, account_id, rank, seq)
    WHERE status IN ('pending', 'scheduled', 'deferred');
CREATE INDEX messages_due ON messages (due_ts) WHERE status IN ('pending', 'scheduled', 'deferred');
CREATE INDEX messages_leased ON messages (lease_expires_ts) WHERE status = 'sending';
CREATE INDEX messages_final ON messages (final_ts) WHERE status IN ('sent', 'error', 'unknown');
CREATE TABLE history (
    pk bigserial PRIMARY KEY, message_pk bigint NOT NULL, event text NOT NULL,
    ts double precision NOT NULL, detail text);
CREATE INDEX history_message ON history (message_pk);
CREATE TABLE reports (
    seq bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE, tenant_id text NOT NULL,
    message_pk bigint NOT NULL, payload bytea NOT NULL, created_ts double precision NOT NULL,
    acked_ts double precision);
CREATE INDEX reports_message ON reports (message_pk);
CREATE INDEX reports_pending ON reports (tenant_id, seq) WHERE acked_ts IS NULL;
CREATE TABLE report_leases (
    tenant_id text PRIMARY KEY, owner text NOT NULL, expires_ts double precision NOT NULL);
CREATE TABLE rate_slots (key text NOT NULL, ts double precision NOT NULL, message_pk bigint);
CREATE INDEX rate_slots_key ON rate_slots (key, ts);
CREATE INDEX rate_slots_message ON rate_slots (message_pk);
CREATE TABLE account_pauses (
    tenant_id text NOT NULL, account_id text NOT NULL, failures integer NOT NULL,
    until_ts double precision NOT NULL, reason text NOT NULL,
    PRIMARY KEY (tenant_id, account_id));
CREATE TABLE suspensions (
    tenant_id text NOT NULL, batch_code text NOT NULL, PRIMARY KEY (tenant_id, batch_code));
CREATE TABLE tenant_keys (
    tenant_id text PRIMARY KEY, digest text NOT NULL UNIQUE, expires_ts double precision);
CREATE TABLE idempotency (
    scope text NOT NULL, key text NOT NULL, fingerprint text NOT NULL, status integer,
    body bytea, created_ts double precision NOT NULL, PRIMARY KEY (scope, key));
CREATE INDEX idempotency_created ON idempotency (created_ts);

-- name: 2
-- Who started an unfinished idempotency record, so that a restarted worker can release
-- the keys its previous process died holding.
ALTER TABLE idempotency ADD COLUMN owner text;

-- name: 3
-- Message counts per tenant and status, kept by triggers on every path that adds,
-- changes or removes a message, as SQLite keeps them: /status, /metrics and the status
-- page read them without counting the table. Unlike SQLite's, the rows are deltas, only
-- ever inserted (a row-level counter that every claim and completion updates would be a
-- hot row, and one that transactions lock in different orders would deadlock); readers
-- sum them, and fold_status_counts folds them now and then. The table is locked against
-- writers first, so that no message written while the counts are taken goes uncounted;
-- the functions keep the schema they were created in, whoever's session fires them.
LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE status_counts (tenant_id text NOT NULL, status text NOT NULL, n bigint NOT NULL);
CREATE INDEX status_counts_tenant ON status_counts (tenant_id, status);
INSERT INTO status_counts (tenant_id, status, n)
    SELECT tenant_id, status, COUNT(*) FROM messages GROUP BY tenant_id, status;
CREATE FUNCTION count_message_status() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO status_counts (tenant_id, status, n) VALUES (OLD.tenant_id, OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO status_counts (tenant_id, status, n) VALUES (NEW.tenant_id, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_counted AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION count_message_status();
CREATE TRIGGER messages_uncounted AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION count_message_status();
CREATE TRIGGER messages_recounted AFTER UPDATE OF status, tenant_id ON messages
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION count_message_status();

-- name: 4
-- Rate-limit totals, as SQLite keeps them: the live reservations of each window key, so
-- that a key below a window's limit has room without a scan. Insert-only deltas, as the
-- status counts; reserve_slots folds a key's deltas under the key's advisory lock.
LOCK TABLE rate_slots IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE rate_totals (key text NOT NULL, n bigint NOT NULL);
CREATE INDEX rate_totals_key ON rate_totals (key);
INSERT INTO rate_totals (key, n) SELECT key, COUNT(*) FROM rate_slots GROUP BY key;
CREATE FUNCTION count_rate_slot() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rate_totals (key, n) VALUES (NEW.key, 1);
    ELSE
        INSERT INTO rate_totals (key, n) VALUES (OLD.key, -1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rate_slots_added AFTER INSERT ON rate_slots
    FOR EACH ROW EXECUTE FUNCTION count_rate_slot();
CREATE TRIGGER rate_slots_removed AFTER DELETE ON rate_slots
    FOR EACH ROW EXECUTE FUNCTION count_rate_slot();

-- name: 5
-- A process's own leased messages (each claim counts what it holds), as SQLite finds them.
CREATE INDEX messages_owned ON messages (lease_owner) WHERE status = 'sending';

-- name: 6
-- Bounces and suppression: what bounce mailboxes and SMTP refusals said about sent
-- messages, the tenants' suppression lists, the mailbox messages already handled (by
-- mailbox, UIDVALIDITY and UID: each is applied once), and the database's own secrets
-- (the key of the correlation tokens).
CREATE TABLE bounce_records (
    pk bigserial PRIMARY KEY, message_pk bigint NOT NULL, tenant_id text NOT NULL,
    address_key text, kind text NOT NULL, counted integer NOT NULL,
    ts double precision NOT NULL, data bytea NOT NULL);
CREATE INDEX bounce_records_message ON bounce_records (message_pk);
CREATE INDEX bounce_records_counted ON bounce_records (tenant_id, address_key, ts)
    WHERE counted = 1;
CREATE TABLE suppressions (
    tenant_id text NOT NULL, address_key text NOT NULL, reason text NOT NULL,
    expires_ts double precision, data bytea NOT NULL, PRIMARY KEY (tenant_id, address_key));
CREATE TABLE mailbox_entries (
    mailbox text NOT NULL, uidvalidity bigint NOT NULL, uid bigint NOT NULL,
    outcome text NOT NULL, tenant_id text, summary text NOT NULL,
    seen_ts double precision NOT NULL, PRIMARY KEY (mailbox, uidvalidity, uid));
CREATE INDEX mailbox_entries_unparsed ON mailbox_entries (seen_ts) WHERE outcome = 'unparsed';
CREATE TABLE instance_secrets (name text PRIMARY KEY, value text NOT NULL);

-- name: 10
-- Failover between accounts: the fallback a claim chose to send a message through
-- (NULL: its own account), kept while the message is leased.
ALTER TABLE messages ADD COLUMN via_account_id text;

-- name: 11
-- PEC receipts: the deadlines of a message sent by a PEC account (acceptance, and a
-- delivery or error receipt of each of its recipients), what its receipts said so far
-- (a mark each, once), and the messages by Message-ID, which is how a receipt names one.
CREATE TABLE pec_pending (
    message_pk bigint PRIMARY KEY, tenant_id text NOT NULL,
    acceptance_due_ts double precision, delivery_due_ts double precision NOT NULL, recipients integer NOT NULL);
CREATE INDEX pec_pending_acceptance ON pec_pending (acceptance_due_ts)
    WHERE acceptance_due_ts IS NOT NULL;
CREATE INDEX pec_pending_delivery ON pec_pending (delivery_due_ts);
CREATE TABLE pec_marks (
    message_pk bigint NOT NULL, mark text NOT NULL, PRIMARY KEY (message_pk, mark));
CREATE INDEX messages_message_id ON messages (tenant_id, message_id);
