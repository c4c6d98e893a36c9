-- The outbox, part 2: delivery state per batch and every delivery attempt.
-- batches.state: staged → sealed → sending → delivered | dead.
ALTER TABLE batches ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- When the first attempt of the current sealing started (RFC 3339, ms):
-- the retry budget (max_elapsed) runs from here, across restarts.
ALTER TABLE batches ADD COLUMN first_attempt_at TEXT;
ALTER TABLE batches ADD COLUMN dead_at TEXT;
-- Why the batch is dead: error class and the register's (sanitised) message.
ALTER TABLE batches ADD COLUMN dead_reason TEXT;
ALTER TABLE batches ADD COLUMN receipt_id TEXT;
-- How often the batch was re-sealed after an operator retry.
ALTER TABLE batches ADD COLUMN reseals INTEGER NOT NULL DEFAULT 0;

-- Every attempt to send a batch (kind 'send' or 'replay').
CREATE TABLE delivery_attempts (
    feed         TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    data_sha256  TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    -- running | delivered | retry | dead
    outcome      TEXT NOT NULL,
    http_status  INTEGER,
    error_class  TEXT,
    detail       TEXT,
    latency_ms   INTEGER,
    receipt      TEXT,
    PRIMARY KEY (feed, seq, attempt)
) WITHOUT ROWID;
CREATE INDEX delivery_attempts_outcome ON delivery_attempts (outcome, error_class);

-- SHA-256 over the staged rows a batch was sealed from (record_id, op, row
-- per line): an operator's retry re-seals the batch only if they changed.
ALTER TABLE batches ADD COLUMN rows_sha256 TEXT;
