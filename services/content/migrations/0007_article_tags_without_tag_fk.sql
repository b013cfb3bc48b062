-- A foreign key from article_tags to tags made every publish take a KEY
-- SHARE lock on its tags' rows. Tags are few and shared, so concurrent
-- publishers locked the same rows at once, and PostgreSQL recorded each such
-- shared lock as a MultiXact: about 2.5 per article under load, and a
-- sixth of the publish statement's database CPU (bench/README.md, the
-- twelfth pass). The service never deletes a tag, and every read reaches a
-- tag through a join on `tags`, so a link left by a tag deleted by hand is
-- never seen; publishing checks its links' count and relinks (see
-- `relink_tags`).
ALTER TABLE article_tags DROP CONSTRAINT IF EXISTS article_tags_tag_id_fkey;
