-- Issue 17: aggregate (statistics) feeds. An aggregate feed's rows are not
-- delivered: they are the statistics' inputs, kept here per period (its
-- current rows, as a row feed's register would hold them). What was
-- published of each cell (by its keyed id) is in aggregate_cells, so that a
-- run sends only the cells that changed, and retracts those that are gone.
CREATE TABLE aggregate_inputs (
    feed      TEXT NOT NULL,
    record_id TEXT NOT NULL,
    period    TEXT NOT NULL,
    person    TEXT NOT NULL,
    row_json  TEXT NOT NULL,
    PRIMARY KEY (feed, record_id)
);
CREATE INDEX aggregate_inputs_period ON aggregate_inputs (feed, period);
CREATE TABLE aggregate_cells (
    feed     TEXT NOT NULL,
    cell_id  TEXT NOT NULL,
    period   TEXT NOT NULL,
    row_hash TEXT NOT NULL,
    PRIMARY KEY (feed, cell_id)
);
CREATE INDEX aggregate_cells_period ON aggregate_cells (feed, period);
