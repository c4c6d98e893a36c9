-- Issue 15: document locators (seen.path, documents.path, quarantine.path)
-- are stored sealed under a key derived from the index key (see
-- src/store/locator.rs), never in clear: a file named after a hetu must
-- leave no hetu in the store. SQL does not know the index key, so this
-- step marks a store that holds rows written before; the first process that
-- opens the store with its keys seals those rows in one transaction and
-- removes the mark (store::locator::seal_legacy_locators). A new, empty
-- store gets no mark. Forward only: an older regfeed cannot read sealed
-- locators (restore the pre-upgrade backup to roll back; docs/OPERATIONS.md).
CREATE TABLE locator_sealing_pending (
    marked INTEGER NOT NULL
);
INSERT INTO locator_sealing_pending (marked)
SELECT 1
WHERE EXISTS (SELECT 1 FROM seen)
   OR EXISTS (SELECT 1 FROM documents)
   OR EXISTS (SELECT 1 FROM quarantine);
