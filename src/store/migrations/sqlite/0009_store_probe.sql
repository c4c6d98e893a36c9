-- Readiness (issue 14): each daemon process proves the store takes writes
-- by rewriting its own row here, a write as small as one can be.
CREATE TABLE store_probe (
    holder TEXT PRIMARY KEY,
    -- Unix milliseconds of the last probe.
    at     INTEGER NOT NULL
);
