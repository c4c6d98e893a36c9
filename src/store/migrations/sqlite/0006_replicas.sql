-- Several processes sharing one store (issue 7). Each scheduled fire of a
-- feed is claimed by one process; the claim of a process that stopped
-- beating is taken over once. Runs say which process ran them, so the run
-- log shows how the work spread.
ALTER TABLE runs ADD COLUMN holder TEXT;
-- The scheduled fire the run was for (NULL: `regfeed once`).
ALTER TABLE runs ADD COLUMN fire_at TEXT;

-- Every process running the daemon, and when it last said it was alive
-- (Unix milliseconds).
CREATE TABLE replicas (
    holder     TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    seen_at    INTEGER NOT NULL
);

CREATE TABLE fires (
    feed       TEXT NOT NULL,
    -- RFC 3339 UTC, whole seconds: every replica computes the same key.
    fire_at    TEXT NOT NULL,
    holder     TEXT NOT NULL,
    -- running | done
    state      TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    takeovers  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (feed, fire_at)
);
