-- Several processes sharing one store (issue 7). Each scheduled fire of a
-- feed is claimed by one process; the claim of a process that stopped
-- beating is taken over once. Runs say which process ran them, so the run
-- log shows how the work spread.
ALTER TABLE runs ADD COLUMN holder TEXT COLLATE "C";
-- The scheduled fire the run was for (NULL: `regfeed once`).
ALTER TABLE runs ADD COLUMN fire_at TEXT COLLATE "C";

-- Every process running the daemon, and when it last said it was alive
-- (Unix milliseconds).
CREATE TABLE replicas (
    holder     TEXT COLLATE "C" PRIMARY KEY,
    started_at TEXT COLLATE "C" NOT NULL,
    seen_at    BIGINT NOT NULL
);

CREATE TABLE fires (
    feed       TEXT COLLATE "C" NOT NULL,
    -- RFC 3339 UTC, whole seconds: every replica computes the same key.
    fire_at    TEXT COLLATE "C" NOT NULL,
    holder     TEXT COLLATE "C" NOT NULL,
    -- running | done
    state      TEXT COLLATE "C" NOT NULL,
    claimed_at TEXT COLLATE "C" NOT NULL,
    takeovers  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (feed, fire_at)
);
