-- Follows that ended, kept for the events' retention window, so a fan-out
-- consumed late asks who followed an author when the event happened: an
-- unfollow in the gap does not take the follower out of it. A follow, its
-- end and a follow again are two periods: one here, one in `follows`.
CREATE TABLE past_follows (
    follower_id   uuid NOT NULL,
    followee_id   uuid NOT NULL,
    followed_at   timestamptz NOT NULL,
    unfollowed_at timestamptz NOT NULL,
    CHECK (followed_at <= unfollowed_at)
);

-- Fan-out as of a time, keyset-paged by follower id like `follows`.
CREATE INDEX past_follows_followee_idx ON past_follows (followee_id, follower_id);
-- Retention deletes by age.
CREATE INDEX past_follows_unfollowed_idx ON past_follows (unfollowed_at);
