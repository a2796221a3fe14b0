"""The SQL store, written once for SQLite and PostgreSQL.

The pattern, in four parts:

- **Operations are plain synchronous functions over a transaction**:
  ``def claim_due(tx: Tx, *, now, limit, owner, lease_s, tenant_limit)`` in
  :mod:`.queue`, :mod:`.reads` and :mod:`.admin`. Each runs inside one transaction that
  commits when it returns and rolls back when it raises; policy comes from
  :mod:`mailproxy.domain` (the SQL that reproduces a domain function names it).
- **SQL text lives in ``.sql`` files** as named queries (``-- name: …`` sections, read
  by :class:`.tx.Queries`, used as ``tx.q.claim``): ``queries.sql`` for what both engines
  run as written (``?`` placeholders, which PostgreSQL's ``Tx`` turns into ``%s``),
  ``sqlite.sql`` / ``postgres.sql`` for the few queries whose dialects truly differ,
  ``sqlite_schema.sql`` / ``postgres_schema.sql`` for each engine's numbered schema
  history: the same tables and the same maintained counts (``status_counts``,
  ``rate_totals``: rows kept in place by triggers on SQLite, insert-only deltas folded
  now and then on PostgreSQL, where a counter row would be a hot, deadlock-prone lock).
- **The engine differences are one class each**: :class:`.tx.Tx` lists them (row locks,
  ``SKIP LOCKED``, a column in a list of values bound as one parameter, advisory locks on
  rate keys, message sequence numbers, the heads of the account queues, wake-ups on
  commit, folding counts); ``SqliteTx`` (``adapters/sqlite.py``) and ``PostgresTx``
  (``adapters/postgres.py``) fill them in.
- **One execution model**: an engine runs the operation on a worker thread and awaits it
  — SQLite on its single writer thread with group commit (writes queued while one commits
  run together in the next ``BEGIN IMMEDIATE``, each in a savepoint), PostgreSQL on a
  thread pool over psycopg's synchronous connection pool. :class:`.store.SqlStore` is
  the async port over that: one line per operation.
"""
