-- The daemon (issue 6): feed leases and what the scheduler last handled.

-- One holder at a time may run a feed (the daemon, or `regfeed once`). A
-- lease is taken or renewed by compare-and-set; `token` grows by one at every
-- acquisition and fences a holder that lost its lease.
CREATE TABLE leases (
    feed        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    -- Unix milliseconds; a lease at or before now is free.
    expires_at  INTEGER NOT NULL
);

-- The last fire time the scheduler handled per feed (ran it, or skipped it
-- by policy): a restart catches up from here.
CREATE TABLE schedule_state (
    feed        TEXT PRIMARY KEY,
    last_fire   TEXT NOT NULL,
    schedule    TEXT NOT NULL
);
