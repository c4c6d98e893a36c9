-- A `sql` source's high-water mark is MAX(mtime_ns) over its seen rows
-- (there, mtime_ns is the row's archived_at). Without this index that is a
-- scan of every document the source ever gave, at every run.
CREATE INDEX seen_source_mtime ON seen (source, mtime_ns);
