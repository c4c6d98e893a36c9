-- The audit trail (DESIGN.md §6): append-only, hash-chained. People appear
-- only as audit pseudonyms inside `data`. `seq` is gapless from 1; `hash` is
-- SHA-256 over the canonical encoding defined in src/audit/chain.rs.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    feed      TEXT,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- A guard against accidents, not the protection: anyone who can write the
-- file can drop these. The hash chain and the outside anchor are what catch
-- tampering.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
