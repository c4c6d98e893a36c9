-- regfeed store, SQLite. People appear only as index pseudonyms (HMAC under
-- the index key), never as hetus; clinical content is not stored except in
-- staged batch rows, which are what a feed is about to disclose.

-- Files of archive_dir sources already looked at.
CREATE TABLE seen (
    source   TEXT NOT NULL,
    path     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    seen_at  TEXT NOT NULL,
    PRIMARY KEY (source, path)
) WITHOUT ROWID;

-- Every decoded document version: header facts and its locator.
CREATE TABLE documents (
    doc_key       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id        TEXT NOT NULL UNIQUE,
    set_id        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    person        TEXT,
    source        TEXT NOT NULL,
    path          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    packaging     TEXT NOT NULL,
    controller    TEXT,
    code_system   TEXT,
    code          TEXT,
    withdrawal    INTEGER NOT NULL,
    invalidates   TEXT,
    sensitive     INTEGER NOT NULL,
    records       INTEGER NOT NULL,
    ingested_at   TEXT NOT NULL
);
CREATE INDEX documents_person ON documents (person);

-- Documents refused by the decoder, or conflicting with one already held.
CREATE TABLE quarantine (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    source  TEXT NOT NULL,
    path    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    class   TEXT NOT NULL,
    detail  TEXT NOT NULL,
    at      TEXT NOT NULL
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    feed        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL,
    counts      TEXT NOT NULL DEFAULT '{}'
);

-- How far each feed has processed the documents table.
CREATE TABLE feed_cursor (
    feed    TEXT PRIMARY KEY,
    doc_key INTEGER NOT NULL
);

-- Per feed and document: whether it is cohort evidence.
CREATE TABLE feed_docs (
    feed     TEXT NOT NULL,
    doc_key  INTEGER NOT NULL,
    person   TEXT NOT NULL,
    evidence INTEGER NOT NULL,
    PRIMARY KEY (feed, doc_key)
) WITHOUT ROWID;

-- Per feed and document: the rows its records map to (hashes, not content).
CREATE TABLE feed_doc_rows (
    feed       TEXT NOT NULL,
    doc_key    INTEGER NOT NULL,
    ordinal    INTEGER NOT NULL,
    record_id  TEXT NOT NULL,
    row_hash   TEXT NOT NULL,
    event_date TEXT,
    held       TEXT,
    PRIMARY KEY (feed, doc_key, ordinal)
) WITHOUT ROWID;

-- What each register has been sent: the live rows, by record id.
CREATE TABLE feed_rows (
    feed      TEXT NOT NULL,
    record_id TEXT NOT NULL,
    person    TEXT NOT NULL,
    row_hash  TEXT NOT NULL,
    live      INTEGER NOT NULL,
    batch_seq INTEGER NOT NULL,
    PRIMARY KEY (feed, record_id)
) WITHOUT ROWID;
CREATE INDEX feed_rows_person ON feed_rows (feed, person);

CREATE TABLE cohort (
    feed       TEXT NOT NULL,
    person     TEXT NOT NULL,
    member     INTEGER NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (feed, person)
) WITHOUT ROWID;

-- Records held back, with the reason; re-evaluated every run.
CREATE TABLE held (
    feed      TEXT NOT NULL,
    record_id TEXT NOT NULL,
    person    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    since     TEXT NOT NULL,
    PRIMARY KEY (feed, record_id)
) WITHOUT ROWID;
CREATE INDEX held_person ON held (feed, person);

-- The outbox: staged → sealed → delivered (or dead).
CREATE TABLE batches (
    feed            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    sealed_at       TEXT,
    delivered_at    TEXT,
    window_from     INTEGER,
    window_to       INTEGER NOT NULL,
    upserts         INTEGER NOT NULL,
    retracts        INTEGER NOT NULL,
    held            TEXT NOT NULL DEFAULT '{}',
    data_file       TEXT,
    data_bytes      INTEGER,
    data_sha256     TEXT,
    manifest_sha256 TEXT,
    receipt         TEXT,
    PRIMARY KEY (feed, seq)
);

CREATE TABLE batch_rows (
    feed      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    line      INTEGER NOT NULL,
    record_id TEXT NOT NULL,
    op        TEXT NOT NULL,
    row       TEXT NOT NULL,
    PRIMARY KEY (feed, seq, line)
) WITHOUT ROWID;
