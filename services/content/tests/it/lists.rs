//! The article list: filters, search, limit/offset and keyset paging, and
//! the two performance proofs (statements per list, index use per filter).

use crate::support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use quill_content::repo::{
    articles::{self, ArticleFilter, PageRequest},
    follows,
};
use quill_proto::content::v1 as pb;
use sqlx::{ConnectOptions, PgPool, postgres::PgPoolOptions};
use support::{World, as_user, assert_code, titles, violated_fields};
use tonic::Code;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::{Layer, layer::SubscriberExt};
use uuid::Uuid;

fn list(limit: u32, offset: u32, cursor: Option<String>) -> pb::ListArticlesRequest {
    pb::ListArticlesRequest {
        limit,
        offset,
        cursor,
        ..Default::default()
    }
}

/// Articles "A 0".."A {n-1}" by a fresh user, oldest first.
async fn articles(world: &World, n: usize) -> support::User {
    let alice = world.user("alice").await;
    for i in 0..n {
        world.article_by(&alice, &format!("A {i}"), &[]).await;
    }
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_default_cap_and_huge_offsets_are_empty_pages() {
    let world = World::start().await;
    let alice = articles(&world, 3).await;
    let page = world.list(None, list(0, 0, None)).await.unwrap();
    assert_eq!(titles(&page), ["A 2", "A 1", "A 0"]);
    assert_eq!(page.articles_count, 3);
    assert!(page.next_cursor.is_none());

    let huge_offset = world.list(None, list(10, u32::MAX, None)).await.unwrap();
    assert!(huge_offset.articles.is_empty());
    assert_eq!(huge_offset.articles_count, 3);

    // 120 more, straight into the database, to see the cap of 100.
    let pool = PgPool::connect(&world.content.db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO articles (id, slug, title, description, body, author_id, created_at) \
         SELECT gen_random_uuid(), 'bulk-' || g, 'Bulk ' || g, 'd', 'b', $1, \
                now() - interval '1 day' + g * interval '1 second' \
         FROM generate_series(1, 120) g",
    )
    .bind(alice.id.parse::<Uuid>().unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let capped = world.list(None, list(u32::MAX, 0, None)).await.unwrap();
    assert_eq!(capped.articles.len(), 100);
    assert_eq!(capped.articles_count, 123);
    assert!(capped.next_cursor.is_some());
    // Not the first page asked above: the bulk insert announced nothing,
    // so that page may still be cached as it was (the relay's bumps for
    // the first three articles may have landed before it was read).
    let default = world.list(None, list(0, 1, None)).await.unwrap();
    assert_eq!(default.articles.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_walk_visits_what_an_offset_walk_does() {
    let world = World::start().await;
    articles(&world, 7).await;
    let mut by_cursor = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = world.list(None, list(3, 0, cursor)).await.unwrap();
        assert_eq!(page.articles_count, 7);
        by_cursor.extend(titles(&page));
        pages += 1;
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let mut by_offset = Vec::new();
    for offset in (0..9).step_by(3) {
        by_offset.extend(titles(
            &world.list(None, list(3, offset, None)).await.unwrap(),
        ));
    }
    assert_eq!(by_cursor, by_offset);
    assert_eq!(by_cursor, ["A 6", "A 5", "A 4", "A 3", "A 2", "A 1", "A 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_malformed_cursors_are_refused() {
    let world = World::start().await;
    articles(&world, 3).await;
    let cursor = world
        .list(None, list(1, 0, None))
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    let mut tampered: Vec<char> = cursor.chars().collect();
    tampered[5] = if tampered[5] == 'x' { 'y' } else { 'x' };
    let tampered: String = tampered.into_iter().collect();
    for bad in [
        tampered,
        "garbage".into(),
        "'; DROP TABLE articles; --".into(),
        "🦀".into(),
    ] {
        let status = assert_code(
            world.list(None, list(1, 0, Some(bad))).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["cursor"]);
    }
    // Rank order has no keyset: a cursor with a search is refused.
    let status = assert_code(
        world
            .list(
                None,
                pb::ListArticlesRequest {
                    query: Some("body".into()),
                    cursor: Some(cursor),
                    ..Default::default()
                },
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["cursor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_by_tag_author_and_favoriter_combine() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let fan = world.user("fan").await;
    world
        .article_by(&alice, "Alice rust", &["rust", "%_\\"])
        .await;
    world.article_by(&alice, "Alice go", &["go"]).await;
    let bobs = world
        .article_by(&bob, "Bob rust", &["rust", "日本語"])
        .await;
    world
        .client()
        .favorite_article(as_user(
            &fan,
            pb::FavoriteArticleRequest {
                slug: bobs.slug.clone(),
            },
        ))
        .await
        .unwrap();
    let filtered = |tag: Option<&str>, author: Option<&str>, favorited_by: Option<&str>| {
        pb::ListArticlesRequest {
            tag: tag.map(str::to_owned),
            author: author.map(str::to_owned),
            favorited_by: favorited_by.map(str::to_owned),
            ..Default::default()
        }
    };
    let cases: &[(pb::ListArticlesRequest, &[&str])] = &[
        (
            filtered(Some("rust"), None, None),
            &["Bob rust", "Alice rust"],
        ),
        (filtered(Some("%_\\"), None, None), &["Alice rust"]),
        (filtered(Some("%"), None, None), &[]),
        (filtered(Some("日本語"), None, None), &["Bob rust"]),
        (
            filtered(None, Some("alice"), None),
            &["Alice go", "Alice rust"],
        ),
        (
            filtered(None, Some("ALICE"), None),
            &["Alice go", "Alice rust"],
        ),
        (filtered(None, Some("nobody"), None), &[]),
        (filtered(None, Some("' OR 1=1 --"), None), &[]),
        (filtered(Some("rust"), Some("alice"), None), &["Alice rust"]),
        (filtered(None, None, Some("fan")), &["Bob rust"]),
        (
            filtered(Some("rust"), Some("bob"), Some("fan")),
            &["Bob rust"],
        ),
        (filtered(Some("go"), None, Some("fan")), &[]),
        (
            filtered(Some("  "), None, None),
            &["Bob rust", "Alice go", "Alice rust"],
        ),
    ];
    for (request, expected) in cases {
        let page = world.list(None, request.clone()).await.unwrap();
        assert_eq!(titles(&page), *expected, "{request:?}");
        assert_eq!(page.articles_count as usize, expected.len());
    }
    // The viewer's view is part of the same rows.
    world.follow(&fan, &bob).await;
    let seen = world
        .list(Some(&fan), filtered(None, Some("bob"), None))
        .await
        .unwrap();
    assert!(seen.articles[0].favorited);
    assert_eq!(seen.articles[0].favorites_count, 1);
    assert!(seen.articles[0].author.as_ref().unwrap().following);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_title_matches_first_and_tolerates_any_input() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let create = |title: &str, description: &str, body: &str| pb::CreateArticleRequest {
        title: title.into(),
        description: description.into(),
        body: body.into(),
        tags: vec![],
    };
    for request in [
        create(
            "Gardening",
            "Plants",
            "Tomatoes like the sun. Also a word on dragons.",
        ),
        create("Dragons of the north", "Myths", "Stories told by the fire."),
        create("Cooking", "Dragons in the kitchen", "Recipes."),
        create("Привет мир", "Кириллица", "Тело статьи"),
    ] {
        world
            .client()
            .create_article(as_user(&alice, request))
            .await
            .unwrap();
    }
    let search = |q: &str| pb::ListArticlesRequest {
        query: Some(q.into()),
        ..Default::default()
    };
    let page = world.list(None, search("dragon")).await.unwrap();
    assert_eq!(
        titles(&page),
        ["Dragons of the north", "Cooking", "Gardening"]
    );
    assert_eq!(page.articles_count, 3);
    assert!(page.next_cursor.is_none());
    assert_eq!(
        titles(&world.list(None, search("dragons -myths")).await.unwrap()),
        ["Cooking", "Gardening"]
    );
    assert_eq!(
        titles(
            &world
                .list(None, search("\"north\" or tomatoes"))
                .await
                .unwrap()
        )
        .len(),
        2
    );
    let limited = world
        .list(
            None,
            pb::ListArticlesRequest {
                query: Some("dragon".into()),
                limit: 1,
                offset: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(titles(&limited), ["Cooking"]);
    assert_eq!(limited.articles_count, 3);
    for hostile in [
        "'; DROP TABLE articles; --",
        "%_\\",
        "&|!:*()<->",
        "🦀",
        "日本語",
        "\"unterminated",
    ] {
        let page = world.list(None, search(hostile)).await.unwrap();
        assert!(page.articles.is_empty(), "{hostile}: {:?}", titles(&page));
    }
    assert_eq!(
        titles(&world.list(None, search("Привет")).await.unwrap()),
        ["Привет мир"]
    );
    let status = assert_code(
        world.list(None, search(&"q".repeat(257))).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["query"]);
    // The articles survived the hostile searches.
    assert_eq!(
        world
            .list(None, list(0, 0, None))
            .await
            .unwrap()
            .articles_count,
        4
    );
}

/// Counts the SQL statements sqlx runs (it logs each under `sqlx::query`).
struct StatementCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target().starts_with("sqlx::query") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn logging_pool(world: &World) -> PgPool {
    let options = world
        .content
        .config
        .server
        .database
        .connect_options()
        .unwrap()
        .log_statements(log::LevelFilter::Info);
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

async fn count_statements<T>(work: impl std::future::Future<Output = T>) -> (T, usize) {
    let counter = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(StatementCounter(Arc::clone(&counter)));
    let value = work.with_subscriber(subscriber).await;
    (value, counter.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_one_page_statement_and_one_count() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let fan = world.user("fan").await;
    for i in 0..5 {
        let article = world
            .article_by(&alice, &format!("Rust {i}"), &["rust", "db"])
            .await;
        world
            .client()
            .favorite_article(as_user(
                &fan,
                pb::FavoriteArticleRequest { slug: article.slug },
            ))
            .await
            .unwrap();
    }
    world.follow(&fan, &alice).await;
    let pool = logging_pool(&world).await;
    let viewer: Uuid = fan.id.parse().unwrap();
    let every_filter = ArticleFilter {
        tag: Some("rust".into()),
        author: Some("alice".into()),
        favorited_by: Some("fan".into()),
        query: Some("rust".into()),
    };
    let page = PageRequest {
        limit: 20,
        offset: 0,
        after: None,
    };
    // Warm the pool so connecting is not part of the count.
    articles::list(&pool, Some(viewer), &every_filter, page)
        .await
        .unwrap();

    let (result, statements) =
        count_statements(articles::list(&pool, Some(viewer), &every_filter, page)).await;
    let result = result.unwrap();
    assert_eq!(result.rows.len(), 5);
    assert_eq!(result.total, 5);
    assert!(
        result
            .rows
            .iter()
            .all(|r| r.favorited && r.following && r.favorites_count == 1)
    );
    assert!(statements <= 2, "{statements} statements");
    assert!(statements > 0, "the counter must see sqlx's statements");

    let after = Some((result.rows[1].created_at, result.rows[1].id));
    let no_search = ArticleFilter {
        query: None,
        ..every_filter.clone()
    };
    let (keyset, statements) = count_statements(articles::list(
        &pool,
        Some(viewer),
        &no_search,
        PageRequest { after, ..page },
    ))
    .await;
    assert_eq!(keyset.unwrap().rows.len(), 3);
    assert!(statements <= 2, "{statements} statements");

    // The feed's page, what the reader favorited of it and its count: one
    // statement; its articles come from the cache.
    let (feed, statements) = count_statements(articles::feed_page(&pool, viewer, page)).await;
    let feed = feed.unwrap();
    assert_eq!((feed.total, feed.slugs.len()), (5, 5));
    assert_eq!(feed.favorited.len(), 5);
    assert!(feed.favorited.iter().all(|slug| feed.slugs.contains(slug)));
    assert_eq!(statements, 1);
}

/// The plan of `sql` with sequential scans priced out, as JSON text.
async fn plan(pool: &PgPool, sql: &str, bind: impl FnOnce(Explain<'_>) -> Explain<'_>) -> String {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let text = format!("EXPLAIN (FORMAT JSON) {sql}");
    // Unnamed: planned for these parameters, as the lists' pool plans them.
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(text)).persistent(false);
    let plan: serde_json::Value = bind(query).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    plan.to_string()
}

/// The generic plan of `sql`, as a connection of the main pool runs it
/// (`plan_cache_mode = force_generic_plan`), executed with `args` (SQL
/// literals).
async fn generic_plan(pool: &PgPool, sql: &str, args: &str) -> String {
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    for statement in [
        "SET LOCAL enable_seqscan = off".to_owned(),
        "SET LOCAL plan_cache_mode = force_generic_plan".to_owned(),
        format!("PREPARE probe AS {sql}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let explain = format!("EXPLAIN (FORMAT JSON) EXECUTE probe({args})");
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    sqlx::raw_sql("DEALLOCATE probe")
        .execute(&mut *conn)
        .await
        .unwrap();
    plan.to_string()
}

type Explain<'q> =
    sqlx::query::QueryScalar<'q, sqlx::Postgres, serde_json::Value, sqlx::postgres::PgArguments>;

fn bind_list(
    filter: &ArticleFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
) -> impl FnOnce(Explain<'_>) -> Explain<'_> {
    let filter = filter.clone();
    move |q| {
        q.bind(filter.tag)
            .bind(filter.author)
            .bind(filter.favorited_by)
            .bind(filter.query)
            .bind(Some(Uuid::now_v7()))
            .bind(after.map(|(at, _)| at))
            .bind(after.map(|(_, id)| id))
            .bind(21_i64)
            .bind(0_i64)
    }
}

fn bind_filters(filter: &ArticleFilter) -> impl FnOnce(Explain<'_>) -> Explain<'_> {
    let filter = filter.clone();
    move |q| {
        q.bind(filter.tag)
            .bind(filter.author)
            .bind(filter.favorited_by)
            .bind(filter.query)
    }
}

fn assert_uses(plan: &str, indexes: &[&str], what: &str) {
    for index in indexes {
        assert!(
            plan.contains(&format!("\"Index Name\":\"{index}\"")),
            "{what} does not use {index}: {plan}"
        );
    }
    assert!(!plan.contains("Seq Scan"), "{what} scans a table: {plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_the_feed_and_search_use_an_index() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    world.article_by(&alice, "Indexed", &["rust"]).await;
    let pool = world.content_db().await;
    // Realistic statistics: many articles by many authors, so the planner
    // weighs the indexes as it would in production.
    sqlx::query(
        "INSERT INTO articles (id, slug, title, description, body, author_id, created_at) \
         SELECT gen_random_uuid(), 'bulk-' || g, 'Bulk ' || g, 'd', 'b', \
                ('00000000-0000-0000-0000-' || lpad((g % 2500)::text, 12, '0'))::uuid, \
                now() - g * interval '1 minute' \
         FROM generate_series(1, 5000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    for statement in [
        "INSERT INTO authors (id, username) \
         SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'user' || g \
         FROM generate_series(0, 499) g",
        "INSERT INTO tags (name) SELECT 'tag-' || g FROM generate_series(0, 199) g",
        "INSERT INTO article_tags (article_id, tag_id) \
         SELECT a.id, t.id FROM articles a \
         JOIN tags t ON t.name = 'tag-' || (abs(hashtext(a.slug)) % 200) \
         WHERE a.slug LIKE 'bulk-%'",
        "INSERT INTO favorites (article_id, user_id) \
         SELECT a.id, ('00000000-0000-0000-0000-' || lpad((abs(hashtext(a.slug)) % 500)::text, 12, '0'))::uuid \
         FROM articles a WHERE a.slug LIKE 'bulk-%'",
        "INSERT INTO follows (follower_id, followee_id) \
         SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, \
                ('00000000-0000-0000-0000-' || lpad(((g + 1) % 500)::text, 12, '0'))::uuid \
         FROM generate_series(0, 499) g",
        "INSERT INTO past_follows (follower_id, followee_id, followed_at, unfollowed_at) \
         SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, \
                ('00000000-0000-0000-0000-' || lpad(((g + 2) % 500)::text, 12, '0'))::uuid, \
                now() - interval '2 days', now() - interval '1 day' \
         FROM generate_series(0, 4999) g",
        "ANALYZE",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let filter = |tag: Option<&str>,
                  author: Option<&str>,
                  favorited_by: Option<&str>,
                  query: Option<&str>| ArticleFilter {
        tag: tag.map(str::to_owned),
        author: author.map(str::to_owned),
        favorited_by: favorited_by.map(str::to_owned),
        query: query.map(str::to_owned),
    };
    let after = Some((chrono::Utc::now(), Uuid::now_v7()));
    let cases: &[(&str, ArticleFilter, bool, &[&str])] = &[
        (
            "no filter",
            filter(None, None, None, None),
            false,
            // The banned-author anti-join too.
            &["articles_created_idx", "authors_banned_idx"],
        ),
        (
            "keyset page",
            filter(None, None, None, None),
            true,
            &["articles_created_idx"],
        ),
        (
            "tag",
            filter(Some("tag-7"), None, None, None),
            false,
            &["tags_name_key", "article_tags_tag_idx"],
        ),
        (
            "author",
            filter(None, Some("user7"), None, None),
            false,
            &["authors_username_idx", "articles_author_created_idx"],
        ),
        (
            "favorited",
            filter(None, None, Some("user7"), None),
            false,
            &["authors_username_idx", "favorites_user_idx"],
        ),
        (
            "search",
            filter(None, None, None, Some("indexed")),
            false,
            &["articles_search_idx"],
        ),
    ];
    for (what, f, keyset, indexes) in cases {
        let plan_text = plan(
            &pool,
            articles::LIST_PAGE_SQL,
            bind_list(f, if *keyset { after } else { None }),
        )
        .await;
        assert_uses(&plan_text, indexes, what);
        if !keyset {
            let count = plan(&pool, articles::LIST_COUNT_SQL, bind_filters(f)).await;
            assert!(
                !count.contains("Seq Scan"),
                "count of {what} scans a table: {count}"
            );
        }
    }
    let viewer: Uuid = "00000000-0000-0000-0000-000000000007".parse().unwrap();
    // The feed and the follower ids run on the main pool, whose plans are
    // generic: one per connection, whatever the parameters.
    let feed = generic_plan(
        &pool,
        articles::FEED_PAGE_SQL,
        &format!("'{viewer}', NULL, NULL, 21, 0"),
    )
    .await;
    assert_uses(
        &feed,
        &[
            "follows_pkey",
            "articles_author_created_idx",
            "authors_banned_idx",
        ],
        "feed",
    );
    // Of now and as of a moment, first batch or later: both periods'
    // tables are read off their indexes, from the keyset on.
    let as_of_cases: [(_, &[&str]); 2] = [
        (
            "NULL".to_owned(),
            &["follows_followee_idx", "past_follows_followee_idx"],
        ),
        (
            // While every ended follow above was running.
            format!("'{}'", chrono::Utc::now() - chrono::Duration::hours(36)),
            &["follows_followee_idx", "past_follows_followee_idx"],
        ),
    ];
    for (as_of, indexes) in as_of_cases {
        for after in ["NULL", "'00000000-0000-0000-0000-000000000100'"] {
            let followers = generic_plan(
                &pool,
                follows::FOLLOWER_IDS_SQL,
                &format!("'{viewer}', {after}, 500, {as_of}"),
            )
            .await;
            assert_uses(&followers, indexes, "follower ids");
            assert!(
                followers.contains(
                    "\"Index Cond\":\"((followee_id = $1) AND (follower_id > COALESCE($2"
                ),
                "the keyset is an index condition: {followers}"
            );
        }
    }
}
