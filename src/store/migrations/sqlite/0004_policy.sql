-- Policy inputs, by index pseudonym only (never a hetu).

-- Objections to secondary use (GDPR Art. 21).
CREATE TABLE objections (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    person         TEXT NOT NULL,
    made_to        TEXT NOT NULL,          -- a controller id, or 'findata'
    purposes       TEXT NOT NULL,          -- JSON array, or '"all"'
    received_at    TEXT,
    effective_from TEXT NOT NULL,
    withdrawn_at   TEXT,
    source         TEXT,
    reference      TEXT,
    import_id      INTEGER NOT NULL
);
CREATE INDEX objections_person ON objections (person);

-- Restrictions of processing (Art. 18).
CREATE TABLE restrictions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    person     TEXT NOT NULL,
    controller TEXT,                       -- NULL: every controller
    start_at   TEXT NOT NULL,
    end_at     TEXT,
    source     TEXT,
    reference  TEXT,
    import_id  INTEGER NOT NULL
);
CREATE INDEX restrictions_person ON restrictions (person);

-- Denials of disclosure: snapshots. The latest snapshot of a person (by
-- effective time) replaces all earlier ones.
CREATE TABLE denial_snapshots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    person       TEXT NOT NULL,
    origin       TEXT NOT NULL,            -- 'document' or 'import'
    doc_key      INTEGER,
    effective_at TEXT NOT NULL,
    none_valid   INTEGER NOT NULL,
    emergency    INTEGER
);
CREATE INDEX denial_snapshots_person ON denial_snapshots (person);

CREATE TABLE denials (
    snapshot_id   INTEGER NOT NULL,
    service_event TEXT,
    provider      TEXT,                    -- provider OID as written
    all_registers INTEGER NOT NULL,
    from_at       TEXT,
    to_at         TEXT
);
CREATE INDEX denials_snapshot ON denials (snapshot_id);

-- Person flags: 'turvakielto' (non-disclosure for personal safety).
CREATE TABLE person_flags (
    person    TEXT NOT NULL,
    flag      TEXT NOT NULL,
    since     TEXT NOT NULL,
    until     TEXT,
    source    TEXT,
    reference TEXT,
    import_id INTEGER NOT NULL,
    PRIMARY KEY (person, flag)
) WITHOUT ROWID;

CREATE TABLE imports (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    rows     INTEGER NOT NULL,
    counts   TEXT NOT NULL
);

-- What the gate needs of a document, and of a staged row at sealing.
ALTER TABLE documents ADD COLUMN service_event TEXT;
ALTER TABLE batch_rows ADD COLUMN person TEXT;
ALTER TABLE batch_rows ADD COLUMN doc_key INTEGER;
ALTER TABLE batches ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
