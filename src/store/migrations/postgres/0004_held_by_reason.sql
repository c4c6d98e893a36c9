-- A run re-evaluates the people whose records are held by a policy rule
-- (a restriction can end with time); this finds them without reading the
-- holds a mapping made (those change only with a new document).
CREATE INDEX held_feed_reason ON held (feed, reason, person);
