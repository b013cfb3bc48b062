-- Articles, their tags, comments and favorites, follows between users, and a
-- read-model of the authors auth owns (filled on a miss, later by events).

CREATE TABLE authors (
    id           uuid PRIMARY KEY,
    username     text NOT NULL,
    bio          text,
    image        text,
    banned       boolean NOT NULL DEFAULT false,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- Not unique: a rename seen late must not block the user who took the old
-- name; lookups pick the most recently refreshed row.
CREATE INDEX authors_username_idx ON authors (lower(username), refreshed_at DESC);

CREATE TABLE articles (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL,
    title       text NOT NULL,
    description text NOT NULL,
    body        text NOT NULL,
    author_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
                    setweight(to_tsvector('english', coalesce(description, '')), 'B') ||
                    setweight(to_tsvector('english', coalesce(body, '')), 'C')
                ) STORED,
    CONSTRAINT articles_slug_key UNIQUE (slug)
);

-- Newest first, with the id breaking ties: the listing order and the keyset.
CREATE INDEX articles_created_idx ON articles (created_at DESC, id DESC);
-- The author filter and the feed.
CREATE INDEX articles_author_created_idx ON articles (author_id, created_at DESC, id DESC);
CREATE INDEX articles_search_idx ON articles USING gin (search);

CREATE TABLE tags (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    CONSTRAINT tags_name_key UNIQUE (name)
);

CREATE TABLE article_tags (
    article_id uuid NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    tag_id     bigint NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (article_id, tag_id)
);

CREATE INDEX article_tags_tag_idx ON article_tags (tag_id, article_id);

CREATE TABLE favorites (
    article_id uuid NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (article_id, user_id)
);

-- The favorited-by filter.
CREATE INDEX favorites_user_idx ON favorites (user_id, article_id);

CREATE TABLE follows (
    follower_id uuid NOT NULL,
    followee_id uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);

-- Follower fan-out, keyset-paged by follower id.
CREATE INDEX follows_followee_idx ON follows (followee_id, follower_id);

CREATE TABLE comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    article_id uuid NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    author_id  uuid NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX comments_article_idx ON comments (article_id, id);
