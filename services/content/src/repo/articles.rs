//! Articles, their tags and favorites. Every read returns `ArticleRow`: the
//! article, its sorted tags, favorites count, whether the viewer favorited
//! it and follows its author, all computed in the same statement.

use chrono::{DateTime, Utc};
use quill_events::outbox::OutboxRow;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow, Serialize, Deserialize)]
pub struct ArticleRow {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub author_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `None` when the author is missing from the read-model.
    pub author_username: Option<String>,
    pub author_bio: Option<String>,
    pub author_image: Option<String>,
    pub tags: Vec<String>,
    pub favorites_count: i64,
    pub favorited: bool,
    pub following: bool,
}

/// Article `a` is visible: its author is not banned. An anti-join on the
/// partial index of banned authors, which stays tiny; an author missing
/// from the read-model is not known to be banned.
macro_rules! visible {
    () => {
        "NOT EXISTS (SELECT 1 FROM authors ban WHERE ban.id = a.author_id AND ban.banned) "
    };
}

/// The columns of `ArticleRow` for article `a` joined with author `au`, as
/// seen by the viewer bound to parameter `$viewer` (NULL for anonymous).
macro_rules! article_columns {
    ($viewer:literal) => {
        concat!(
            "a.id, a.slug, a.title, a.description, a.body, a.author_id, a.created_at, \
             a.updated_at, au.username AS author_username, au.bio AS author_bio, \
             au.image AS author_image, \
             COALESCE((SELECT array_agg(t.name ORDER BY t.name COLLATE \"C\") FROM article_tags at \
                       JOIN tags t ON t.id = at.tag_id WHERE at.article_id = a.id), \
                      '{}'::text[]) AS tags, \
             (SELECT count(*) FROM favorites f WHERE f.article_id = a.id) AS favorites_count, \
             EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = ",
            $viewer,
            "::uuid) AS favorited, \
             EXISTS (SELECT 1 FROM follows fo WHERE fo.followee_id = a.author_id \
                     AND fo.follower_id = ",
            $viewer,
            "::uuid) AS following \
             FROM articles a LEFT JOIN authors au ON au.id = a.author_id "
        )
    };
}

/// The filters of the article list; each unset one is NULL and folds away
/// when PostgreSQL plans the statement with its parameters (it runs on the
/// pool that does, see the module `repo`). The set filters are
/// `= ANY (ARRAY(subquery))`: an init plan whose result is an index
/// condition on `articles`, where `IN (subquery)` under an `OR` would stay a
/// per-row filter over the whole table.
/// $1 tag, $2 author username, $3 favorited-by username, $4 search query.
/// Articles of banned authors are never listed.
macro_rules! list_filters {
    () => {
        concat!(
            "WHERE ($1::text IS NULL OR a.id = ANY (ARRAY( \
             SELECT at.article_id FROM article_tags at JOIN tags t ON t.id = at.tag_id \
             WHERE t.name = $1))) \
           AND ($2::text IS NULL OR a.author_id = ANY (ARRAY( \
             SELECT u.id FROM authors u WHERE lower(u.username) = lower($2)))) \
           AND ($3::text IS NULL OR a.id = ANY (ARRAY( \
             SELECT fv.article_id FROM favorites fv JOIN authors u ON u.id = fv.user_id \
             WHERE lower(u.username) = lower($3)))) \
           AND ($4::text IS NULL OR a.search @@ websearch_to_tsquery('english', $4)) \
           AND ",
            visible!()
        )
    };
}

/// One page of the article list: filters $1-$4, viewer $5, keyset position
/// $6/$7 (NULL for the first page), limit $8, offset $9. With a search query
/// the order is rank first, then newest.
pub const LIST_PAGE_SQL: &str = concat!(
    "SELECT ",
    article_columns!("$5"),
    list_filters!(),
    "AND ($6::timestamptz IS NULL OR (a.created_at, a.id) < ($6, $7::uuid)) \
     ORDER BY CASE WHEN $4::text IS NULL THEN 0 \
                   ELSE ts_rank(a.search, websearch_to_tsquery('english', $4)) END DESC, \
              a.created_at DESC, a.id DESC \
     LIMIT $8 OFFSET $9"
);

/// How many articles match the list filters $1-$4.
pub const LIST_COUNT_SQL: &str = concat!("SELECT count(*) FROM articles a ", list_filters!());

/// Which articles a page of `$1`'s feed holds, which of them `$1` has
/// favorited, and how many the feed has: the slugs (keyset position $2/$3,
/// limit $4, offset $5), the favorited ones among them and the count in
/// one round trip. The articles themselves come from the cache.
pub const FEED_PAGE_SQL: &str = concat!(
    "WITH page AS MATERIALIZED (SELECT a.id, a.slug, a.created_at FROM articles a \
       WHERE a.author_id = ANY (ARRAY( \
       SELECT fo.followee_id FROM follows fo WHERE fo.follower_id = $1)) AND ",
    visible!(),
    "AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3::uuid)) \
     ORDER BY a.created_at DESC, a.id DESC LIMIT $4 OFFSET $5) \
     SELECT (SELECT count(*) FROM articles a WHERE a.author_id = ANY (ARRAY( \
     SELECT fo.followee_id FROM follows fo WHERE fo.follower_id = $1)) AND ",
    visible!(),
    ") AS total, \
     ARRAY(SELECT p.slug FROM page p ORDER BY p.created_at DESC, p.id DESC) AS slugs, \
     ARRAY(SELECT p.slug FROM page p JOIN favorites f \
           ON f.article_id = p.id AND f.user_id = $1) AS favorited"
);

/// Of `articles` (ids) and `authors` (ids), those `viewer` favorited and
/// follows: what one viewer sees of a page, in one statement.
pub async fn viewer_marks(
    db: impl PgExecutor<'_>,
    viewer: Uuid,
    articles: &[Uuid],
    authors: &[Uuid],
) -> Result<(Vec<Uuid>, Vec<Uuid>), sqlx::Error> {
    sqlx::query_as(
        "SELECT ARRAY(SELECT f.article_id FROM favorites f \
                      WHERE f.user_id = $1 AND f.article_id = ANY($2)), \
                ARRAY(SELECT fo.followee_id FROM follows fo \
                      WHERE fo.follower_id = $1 AND fo.followee_id = ANY($3))",
    )
    .bind(viewer)
    .bind(articles)
    .bind(authors)
    .fetch_one(db)
    .await
}

/// Which articles a list is about.
#[derive(Debug, Clone, Default)]
pub struct ArticleFilter {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited_by: Option<String>,
    pub query: Option<String>,
}

/// Which slice of them.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub offset: i64,
    /// Start strictly after this (created_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

#[derive(Debug)]
pub struct ArticlePage {
    /// Up to `limit + 1` rows: the extra row tells that another page exists.
    pub rows: Vec<ArticleRow>,
    pub total: i64,
}

/// The article list: exactly two statements, the page and the count.
pub async fn list(
    db: &PgPool,
    viewer: Option<Uuid>,
    filter: &ArticleFilter,
    page: PageRequest,
) -> Result<ArticlePage, sqlx::Error> {
    let rows = sqlx::query_as(LIST_PAGE_SQL)
        .bind(filter.tag.as_deref())
        .bind(filter.author.as_deref())
        .bind(filter.favorited_by.as_deref())
        .bind(filter.query.as_deref())
        .bind(viewer)
        .bind(page.after.map(|(at, _)| at))
        .bind(page.after.map(|(_, id)| id))
        .bind(page.limit + 1)
        .bind(page.offset)
        .fetch_all(db);
    let total = sqlx::query_scalar(LIST_COUNT_SQL)
        .bind(filter.tag.as_deref())
        .bind(filter.author.as_deref())
        .bind(filter.favorited_by.as_deref())
        .bind(filter.query.as_deref())
        .fetch_one(db);
    let (rows, total) = tokio::try_join!(rows, total)?;
    Ok(ArticlePage { rows, total })
}

/// A page of a reader's feed, as [`FEED_PAGE_SQL`] reads it.
#[derive(Debug, Clone, FromRow, Serialize, Deserialize)]
pub struct FeedPage {
    /// How many articles the whole feed has.
    pub total: i64,
    /// The page's articles, newest first (one more than the page's limit
    /// when there is a next page).
    pub slugs: Vec<String>,
    /// Those of them the reader has favorited.
    pub favorited: Vec<String>,
}

/// The page of `follower`'s feed `page` asks for (up to `limit + 1`
/// slugs), what they favorited of it and the feed's size.
pub async fn feed_page(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    page: PageRequest,
) -> Result<FeedPage, sqlx::Error> {
    sqlx::query_as(FEED_PAGE_SQL)
        .bind(follower)
        .bind(page.after.map(|(at, _)| at))
        .bind(page.after.map(|(_, id)| id))
        .bind(page.limit + 1)
        .bind(page.offset)
        .fetch_one(db)
        .await
}

/// Visible articles by slug, as anybody sees them, in no particular order.
pub async fn by_slugs(
    db: impl PgExecutor<'_>,
    slugs: &[String],
) -> Result<Vec<ArticleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        article_columns!("NULL"),
        "WHERE a.slug = ANY($1) AND ",
        visible!()
    ))
    .bind(slugs)
    .fetch_all(db)
    .await
}

/// A visible article as `viewer` sees it; with no viewer, as anybody does
/// (neither favorited nor followed), which is what the cache keeps.
pub async fn by_slug(
    db: impl PgExecutor<'_>,
    slug: &str,
    viewer: Option<Uuid>,
) -> Result<Option<ArticleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        article_columns!("$2"),
        "WHERE a.slug = $1 AND ",
        visible!()
    ))
    .bind(slug)
    .bind(viewer)
    .fetch_optional(db)
    .await
}

/// What a write needs to know about an article before changing it.
#[derive(Debug, Clone, FromRow)]
pub struct ArticleKey {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub author_id: Uuid,
}

/// Locks the row for the rest of the transaction, so concurrent edits of
/// one article serialize.
pub async fn key_for_update(
    db: impl PgExecutor<'_>,
    slug: &str,
) -> Result<Option<ArticleKey>, sqlx::Error> {
    sqlx::query_as("SELECT id, slug, title, author_id FROM articles WHERE slug = $1 FOR UPDATE")
        .bind(slug)
        .fetch_optional(db)
        .await
}

/// A visible article's key: a banned author's articles take no comments
/// or favorites, and list none.
pub async fn key(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<ArticleKey>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT a.id, a.slug, a.title, a.author_id FROM articles a WHERE a.slug = $1 AND ",
        visible!()
    ))
    .bind(slug)
    .fetch_optional(db)
    .await
}

pub struct NewArticle<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub body: &'a str,
    pub author_id: Uuid,
    pub tags: &'a [String],
    /// The event announcing it.
    pub event: &'a OutboxRow,
}

/// What the database decided about a published article.
#[derive(Debug, FromRow)]
pub struct Published {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many of the tags were linked: fewer than asked only when a tag
    /// did not exist.
    pub linked: i64,
}

/// Publishes the articles with their tag links and the events announcing
/// them, in one statement: one round trip and one implicit transaction for
/// all of them. An article whose slug is taken (by an earlier article or
/// one before it here) is left out, with its links and event, and is
/// absent from the answer. The articles are inserted in the order given:
/// writers that order them alike (by slug) wait on each other's slugs in
/// one direction, never in a cycle. The tags must exist already
/// (`create_tags`): a tag inserted by this same statement would be
/// invisible to its link, which reads the statement's snapshot.
pub async fn publish(
    db: impl PgExecutor<'_>,
    articles: &[NewArticle<'_>],
) -> Result<Vec<Published>, sqlx::Error> {
    let slugs: Vec<&str> = articles.iter().map(|a| a.slug).collect();
    let titles: Vec<&str> = articles.iter().map(|a| a.title).collect();
    let descriptions: Vec<&str> = articles.iter().map(|a| a.description).collect();
    let bodies: Vec<&str> = articles.iter().map(|a| a.body).collect();
    let keys: Vec<&str> = articles
        .iter()
        .map(|a| a.event.routing_key.as_str())
        .collect();
    let ids: Vec<Uuid> = articles.iter().map(|a| a.id).collect();
    let authors: Vec<Uuid> = articles.iter().map(|a| a.author_id).collect();
    let events: Vec<Uuid> = articles.iter().map(|a| a.event.id).collect();
    let payloads: Vec<&[u8]> = articles
        .iter()
        .map(|a| a.event.payload.as_slice())
        .collect();
    let (linked_ids, linked_names): (Vec<Uuid>, Vec<&str>) = articles
        .iter()
        .flat_map(|a| a.tags.iter().map(|tag| (a.id, tag.as_str())))
        .unzip();
    sqlx::query_as(
        "WITH new AS ( \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                  $6::uuid[], $7::uuid[], $8::text[], $9::bytea[]) WITH ORDINALITY \
                 AS n(id, slug, title, description, body, author_id, event_id, routing_key, \
                      payload, position)), \
         article AS ( \
             INSERT INTO articles (id, slug, title, description, body, author_id) \
             SELECT id, slug, title, description, body, author_id FROM new ORDER BY position \
             ON CONFLICT (slug) DO NOTHING \
             RETURNING id, created_at, updated_at), \
         linked AS ( \
             INSERT INTO article_tags (article_id, tag_id) \
             SELECT article.id, t.id FROM article \
                 JOIN unnest($10::uuid[], $11::text[]) AS l(article_id, name) \
                     ON l.article_id = article.id \
                 JOIN tags t ON t.name = l.name \
             RETURNING article_id), \
         announced AS ( \
             INSERT INTO outbox (id, routing_key, payload) \
             SELECT new.event_id, new.routing_key, new.payload \
             FROM new JOIN article USING (id) ORDER BY new.position) \
         SELECT article.id, article.created_at, article.updated_at, \
                coalesce(links.linked, 0) AS linked \
         FROM article LEFT JOIN ( \
             SELECT article_id AS id, count(*) AS linked FROM linked GROUP BY article_id \
         ) links USING (id)",
    )
    .bind(&ids)
    .bind(&slugs)
    .bind(&titles)
    .bind(&descriptions)
    .bind(&bodies)
    .bind(&authors)
    .bind(&events)
    .bind(&keys)
    .bind(&payloads)
    .bind(&linked_ids)
    .bind(&linked_names)
    .fetch_all(db)
    .await
}

/// Unset fields keep their value.
pub struct ArticleChanges<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub body: Option<&'a str>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    changes: &ArticleChanges<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE articles SET slug = COALESCE($2, slug), title = COALESCE($3, title), \
             description = COALESCE($4, description), body = COALESCE($5, body), \
             updated_at = clock_timestamp() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(changes.slug)
    .bind(changes.title)
    .bind(changes.description)
    .bind(changes.body)
    .execute(db)
    .await?;
    Ok(())
}

/// Comments, tags links and favorites go with it (ON DELETE CASCADE).
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM articles WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Makes sure every tag name exists.
pub async fn create_tags(db: impl PgExecutor<'_>, names: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tags (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING")
        .bind(names)
        .execute(db)
        .await?;
    Ok(())
}

/// Links the article to the (existing) tags. Runs after `create_tags` as
/// its own statement, so it sees tags another transaction committed
/// meanwhile.
pub async fn link_tags(
    db: impl PgExecutor<'_>,
    article_id: Uuid,
    names: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO article_tags (article_id, tag_id) \
         SELECT $1, id FROM tags WHERE name = ANY($2) ON CONFLICT DO NOTHING",
    )
    .bind(article_id)
    .bind(names)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn unlink_tags(db: impl PgExecutor<'_>, article_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM article_tags WHERE article_id = $1")
        .bind(article_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The `max` most used tags, most used first; ties by code point
/// (whatever the database's collation), so the order is stable.
pub async fn tags_in_use(db: impl PgExecutor<'_>, max: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT t.name FROM tags t JOIN article_tags at ON at.tag_id = t.id \
         GROUP BY t.id, t.name ORDER BY count(*) DESC, t.name COLLATE \"C\" LIMIT $1",
    )
    .bind(max)
    .fetch_all(db)
    .await
}

/// What events tell about an article: its identity, text and tags.
#[derive(Debug, Clone, FromRow)]
pub struct ArticleSummary {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub author_id: Uuid,
    pub author_username: Option<String>,
    pub tags: Vec<String>,
    /// Every edit moves it: a write that announces the article as read
    /// checks it is still so (`as_read!`).
    pub updated_at: DateTime<Utc>,
}

/// The columns of `ArticleSummary` for article `a`.
macro_rules! summary_columns {
    () => {
        "a.id, a.slug, a.title, a.description, a.author_id, a.updated_at, \
         (SELECT au.username FROM authors au WHERE au.id = a.author_id) AS author_username, \
         COALESCE((SELECT array_agg(t.name ORDER BY t.name COLLATE \"C\") \
                   FROM article_tags at JOIN tags t ON t.id = at.tag_id \
                   WHERE at.article_id = a.id), '{}'::text[]) AS tags "
    };
}

/// The article as it stands (inside the caller's transaction), banned
/// author or not.
pub async fn summary(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<ArticleSummary>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        summary_columns!(),
        "FROM articles a WHERE a.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A visible article to favorite, as events tell it, and its fan as the
/// read-model knows them (no username: new here), read in one round trip.
#[derive(Debug, FromRow)]
pub struct FavoritePlace {
    #[sqlx(flatten)]
    pub article: ArticleSummary,
    pub fan_username: Option<String>,
}

pub async fn favorite_place(
    db: impl PgExecutor<'_>,
    slug: &str,
    fan: Uuid,
) -> Result<Option<FavoritePlace>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        summary_columns!(),
        ", (SELECT f.username FROM authors f WHERE f.id = $2) AS fan_username \
         FROM articles a WHERE a.slug = $1 AND ",
        visible!()
    ))
    .bind(slug)
    .bind(fan)
    .fetch_optional(db)
    .await
}

/// Where one of a batch of new comments goes, read for the whole batch in
/// one round trip: the visible article it is on, as events tell it, the id
/// the comment will have (so its event can name it), and its commenter as
/// the read-model knows them (no username: new here).
#[derive(Debug, FromRow)]
pub struct CommentPlace {
    /// The comment's index in the batch.
    pub draft: i64,
    #[sqlx(flatten)]
    pub article: ArticleSummary,
    pub comment_id: i64,
    pub commenter_username: Option<String>,
    pub commenter_bio: Option<String>,
    pub commenter_image: Option<String>,
}

/// The places of comments by `commenters[i]` on the articles `slugs[i]`;
/// none for a comment whose article is absent or hidden. Each comment gets
/// an id of its own, however many go on one article.
pub async fn comment_places(
    db: impl PgExecutor<'_>,
    slugs: &[&str],
    commenters: &[Uuid],
) -> Result<Vec<CommentPlace>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT d.position - 1 AS draft, ",
        summary_columns!(),
        ", nextval(pg_get_serial_sequence('comments', 'id')) AS comment_id, \
           c.username AS commenter_username, c.bio AS commenter_bio, \
           c.image AS commenter_image \
         FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS d(slug, commenter, position) \
         JOIN articles a ON a.slug = d.slug \
         LEFT JOIN authors c ON c.id = d.commenter \
         WHERE ",
        visible!(),
        // The ids are drawn after the sort: in the batch's order, which is
        // the order their events go out in.
        "ORDER BY d.position"
    ))
    .bind(slugs)
    .bind(commenters)
    .fetch_all(db)
    .await
}

/// An article as the user whose favorite a write changed sees it after
/// the write.
#[derive(Debug, FromRow)]
pub struct Marked {
    #[sqlx(flatten)]
    pub article: ArticleRow,
    /// The write added or removed a favorite (else it was already so).
    pub changed: bool,
}

impl Marked {
    /// The statement read the article in its snapshot, which its own write
    /// does not change: count in the user's favorite as it now stands,
    /// whether this write or a concurrent one of theirs made it so.
    fn after(mut self, favorited: bool) -> Self {
        if self.article.favorited != favorited {
            self.article.favorites_count += if favorited { 1 } else { -1 };
            self.article.favorited = favorited;
        }
        self
    }
}

/// Favorites the article, if it is still as `seen` read it, and writes the
/// event announcing it, in one statement that also answers with the
/// article as the fan now sees it: `None`, with nothing written, when the
/// article was edited or deleted since it was read (read it again).
pub async fn favorite_announced(
    db: impl PgExecutor<'_>,
    seen: &ArticleSummary,
    user_id: Uuid,
    event: &OutboxRow,
) -> Result<Option<Marked>, sqlx::Error> {
    let marked: Option<Marked> = sqlx::query_as(concat!(
        "WITH ",
        as_read!("$2", "$1"),
        ", fav AS ( \
             INSERT INTO favorites (article_id, user_id) SELECT a.id, $3 FROM a \
             ON CONFLICT DO NOTHING RETURNING article_id), \
         announced AS ( \
             INSERT INTO outbox (id, routing_key, payload) SELECT $4, $5, $6 FROM fav) \
         SELECT EXISTS (SELECT 1 FROM fav) AS changed, ",
        article_columns!("$3"),
        "WHERE a.id IN (SELECT seen.id FROM a AS seen)"
    ))
    .bind(seen.updated_at)
    .bind(seen.id)
    .bind(user_id)
    .bind(event.id)
    .bind(&event.routing_key)
    .bind(&event.payload)
    .fetch_optional(db)
    .await?;
    Ok(marked.map(|marked| marked.after(true)))
}

/// Removes `user_id`'s favorite of the visible article `slug`, in one
/// statement that also answers with the article as they now see it
/// (`None` when there is no such article).
pub async fn unfavorite_by_slug(
    db: impl PgExecutor<'_>,
    slug: &str,
    user_id: Uuid,
) -> Result<Option<Marked>, sqlx::Error> {
    let marked: Option<Marked> = sqlx::query_as(concat!(
        "WITH target AS (SELECT a.id FROM articles a WHERE a.slug = $1 AND ",
        visible!(),
        "), removed AS (DELETE FROM favorites f USING target \
                         WHERE f.article_id = target.id AND f.user_id = $2 RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM removed) AS changed, ",
        article_columns!("$2"),
        "WHERE a.id IN (SELECT target.id FROM target)"
    ))
    .bind(slug)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(marked.map(|marked| marked.after(false)))
}
