-- Lists hide the articles and comments of banned authors with an anti-join
-- on this index: banned users are few, so it stays tiny.
CREATE INDEX authors_banned_idx ON authors (id) WHERE banned;
