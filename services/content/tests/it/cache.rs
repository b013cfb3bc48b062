//! The read cache: reads are served from Redis, and no answer it holds
//! survives a write, whoever reads next and whichever way the write came
//! (this writer, a writer that died after its commit, auth's events).

use std::time::Duration;

use quill_events::{enqueue, new_envelope};
use quill_proto::{
    content::v1 as pb,
    events::v1::{ArticleSnapshot, ArticleUpdated, envelope::Payload},
};
use tonic::Code;

use crate::support::{World, as_user, assert_code, eventually, titles};

fn hits(cache: &str) -> u64 {
    quill_platform::metrics::get()
        .cache_requests
        .with_label_values(&[cache, "hit"])
        .get()
}

async fn tags(world: &World) -> Vec<String> {
    world
        .client()
        .list_tags(pb::ListTagsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .tags
}

/// Waits until the relay has sent every event, and so made its second
/// bump of what they changed.
async fn relayed(world: &World) {
    let pool = sqlx::PgPool::connect(&world.content.db.url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while quill_events::backlog(&pool).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    // The bump follows the relay's commit by one Redis round trip.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn newest(world: &World) -> pb::ListArticlesResponse {
    world
        .list(
            None,
            pb::ListArticlesRequest {
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reads_are_served_from_the_cache() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "Cached", &["rust"]).await;
    relayed(&world).await;
    for _ in 0..3 {
        world.get(None, &article.slug).await.unwrap();
        newest(&world).await;
        tags(&world).await;
        world
            .client()
            .list_comments(pb::ListCommentsRequest {
                slug: article.slug.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // The first of each read loads; the other two are hits.
    assert_eq!(hits("article"), 2);
    assert_eq!(hits("list"), 2);
    assert_eq!(hits("tags"), 2);
    assert_eq!(hits("comments"), 2);
}

/// Every write is seen by the very next read, with no waiting: its writer
/// makes what it changed stale right after its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cached_answer_survives_a_write() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let article = world.article_by(&alice, "First", &["rust"]).await;
    let slug = article.slug.clone();
    // Warm every cache a write below must make stale.
    world.get(None, &slug).await.unwrap();
    assert_eq!(titles(&newest(&world).await), ["First"]);
    assert_eq!(tags(&world).await, ["rust"]);

    // A new article: lists, counts and tags.
    world.article_by(&bob, "Second", &["grpc"]).await;
    let page = newest(&world).await;
    assert_eq!(titles(&page), ["Second", "First"]);
    assert_eq!(page.articles_count, 2);
    assert_eq!(tags(&world).await, ["grpc", "rust"]);

    // An edit: the article and the lists that show it.
    world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: slug.clone(),
                body: Some("Edited.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(world.get(None, &slug).await.unwrap().body, "Edited.");
    assert_eq!(newest(&world).await.articles[1].body, "Edited.");

    // A favorite, and its withdrawal (which no event announces).
    world.set_favorite(&bob, &slug, true).await;
    assert_eq!(world.get(None, &slug).await.unwrap().favorites_count, 1);
    assert_eq!(newest(&world).await.articles[1].favorites_count, 1);
    world.set_favorite(&bob, &slug, false).await;
    assert_eq!(world.get(None, &slug).await.unwrap().favorites_count, 0);
    assert_eq!(newest(&world).await.articles[1].favorites_count, 0);

    // A new title moves the article: the old slug is gone at once.
    let moved = world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: slug.clone(),
                title: Some("Renamed".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(moved.slug, slug);
    assert_code(world.get(None, &slug).await, Code::NotFound);
    assert_eq!(world.get(None, &moved.slug).await.unwrap().title, "Renamed");

    // A deletion.
    world
        .client()
        .delete_article(as_user(
            &alice,
            pb::DeleteArticleRequest {
                slug: moved.slug.clone(),
            },
        ))
        .await
        .unwrap();
    assert_code(world.get(None, &moved.slug).await, Code::NotFound);
    let page = newest(&world).await;
    assert_eq!(titles(&page), ["Second"]);
    assert_eq!(page.articles_count, 1);
    assert_eq!(tags(&world).await, ["grpc"]);
}

/// The cached part is the same for everybody; each viewer's marks are
/// their own, never another's that the cache happened to keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_sees_their_own_marks_on_a_cached_answer() {
    let world = World::start().await;
    let (alice, bob, carol) = (
        world.user("alice").await,
        world.user("bob").await,
        world.user("carol").await,
    );
    let article = world.article_by(&alice, "Shared", &[]).await;
    world.set_favorite(&bob, &article.slug, true).await;
    world.follow(&bob, &alice).await;
    // Else the relay's bump for these writes may land between the reads
    // and count a hit as a miss.
    relayed(&world).await;

    for _ in 0..2 {
        let seen_by_bob = world.get(Some(&bob), &article.slug).await.unwrap();
        assert!(seen_by_bob.favorited);
        assert!(seen_by_bob.author.unwrap().following);
        let seen_by_carol = world.get(Some(&carol), &article.slug).await.unwrap();
        assert!(!seen_by_carol.favorited);
        assert!(!seen_by_carol.author.unwrap().following);
        let bobs_page = world
            .list(Some(&bob), pb::ListArticlesRequest::default())
            .await
            .unwrap();
        assert!(bobs_page.articles[0].favorited);
        assert!(bobs_page.articles[0].author.as_ref().unwrap().following);
        let carols_page = world
            .list(Some(&carol), pb::ListArticlesRequest::default())
            .await
            .unwrap();
        assert!(!carols_page.articles[0].favorited);
        assert!(!carols_page.articles[0].author.as_ref().unwrap().following);
    }
    assert!(hits("article") >= 2 && hits("list") >= 2);

    world.unfollow(&bob, &alice).await;
    assert!(
        !world
            .get(Some(&bob), &article.slug)
            .await
            .unwrap()
            .author
            .unwrap()
            .following
    );
}

/// A writer that dies between its commit and its bump leaves its event in
/// the outbox: the relay, sending it, makes the change visible well before
/// the entry's TTL (five minutes) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_makes_stale_what_a_dead_writer_left_cached() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "Before", &[]).await;
    assert_eq!(
        world.get(None, &article.slug).await.unwrap().title,
        "Before"
    );

    // The writer's transaction, committed; its bump never made.
    let pool = sqlx::PgPool::connect(&world.content.db.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE articles SET title = 'After' WHERE slug = $1")
        .bind(&article.slug)
        .execute(&mut *tx)
        .await
        .unwrap();
    let updated = Payload::ArticleUpdated(ArticleUpdated {
        article: Some(ArticleSnapshot {
            id: article.id.clone(),
            slug: article.slug.clone(),
            title: "After".into(),
            ..Default::default()
        }),
        previous_slug: None,
    });
    enqueue(&mut tx, &new_envelope("content", updated))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;

    eventually("the relay makes the cached article stale", || async {
        world.get(None, &article.slug).await.unwrap().title == "After"
    })
    .await;
}

/// A profile is cached per username; auth's events about its user make it
/// stale once content has applied them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_change_in_auth_reaches_the_cached_profile() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    world.article_by(&alice, "Mine", &[]).await;
    let profile = || async {
        world
            .client()
            .get_profile(pb::GetProfileRequest {
                username: "alice".into(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(profile().await.bio, None);
    assert_eq!(profile().await.bio, None);
    assert!(hits("profile") >= 1);

    world
        .auth
        .client()
        .update_user(as_user(
            &alice,
            quill_proto::auth::v1::UpdateUserRequest {
                bio: Some("Writes about caches.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    eventually("the bio reaches the cached profile", || async {
        profile().await.bio.as_deref() == Some("Writes about caches.")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_comments_follow_every_comment_added_or_deleted() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let article = world.article_by(&alice, "Talk", &[]).await;
    let bodies = || async {
        world
            .client()
            .list_comments(as_user(
                &alice,
                pb::ListCommentsRequest {
                    slug: article.slug.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .comments
            .into_iter()
            .map(|c| (c.body, c.author.unwrap().following))
            .collect::<Vec<_>>()
    };
    assert!(bodies().await.is_empty());
    let comment = |body: &str| pb::AddCommentRequest {
        slug: article.slug.clone(),
        body: body.to_owned(),
    };
    let first = world
        .client()
        .add_comment(as_user(&bob, comment("First")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bodies().await, [("First".to_owned(), false)]);
    world.follow(&alice, &bob).await;
    assert_eq!(bodies().await, [("First".to_owned(), true)]);
    world
        .client()
        .delete_comment(as_user(
            &bob,
            pb::DeleteCommentRequest {
                slug: article.slug.clone(),
                id: first.id,
            },
        ))
        .await
        .unwrap();
    assert!(bodies().await.is_empty());
}

/// The feed reads which articles it holds from the database and the
/// articles from the entries `GetArticle` keeps: one edit shows in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_shows_cached_articles_as_they_are_now() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    world.follow(&bob, &alice).await;
    let first = world.article_by(&alice, "One", &[]).await;
    world.article_by(&alice, "Two", &[]).await;
    let feed = || async {
        world
            .client()
            .feed(as_user(&bob, pb::FeedRequest::default()))
            .await
            .unwrap()
            .into_inner()
    };
    // "One", the older, comes second: what bob's feed says of its favorites.
    let marks_of_one = || async {
        let page = feed().await;
        (page.articles[1].favorited, page.articles[1].favorites_count)
    };
    relayed(&world).await;
    world.get(None, &first.slug).await.unwrap();
    let before = feed().await;
    assert_eq!(titles(&before), ["Two", "One"]);
    assert_eq!(before.articles_count, 2);
    assert!(hits("article") >= 1, "the feed reuses the article's entry");

    // Another reader's favorite counts, and is not the reader's own.
    let dave = world.user("dave").await;
    world.set_favorite(&dave, &first.slug, true).await;
    assert_eq!(marks_of_one().await, (false, 1));
    world.set_favorite(&dave, &first.slug, false).await;
    // The reader's own favorite shows in their next page.
    world.set_favorite(&bob, &first.slug, true).await;
    assert_eq!(marks_of_one().await, (true, 1));
    world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: first.slug.clone(),
                body: Some("Edited.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let after = feed().await;
    let one = &after.articles[1];
    assert_eq!(
        (one.body.as_str(), one.favorited, one.favorites_count),
        ("Edited.", true, 1)
    );
    assert!(one.author.as_ref().unwrap().following);
    // What the reader sees of a page goes stale with their own marks.
    world.set_favorite(&bob, &first.slug, false).await;
    assert_eq!(marks_of_one().await, (false, 0));
    world
        .client()
        .delete_article(as_user(
            &alice,
            pb::DeleteArticleRequest {
                slug: first.slug.clone(),
            },
        ))
        .await
        .unwrap();
    let after_delete = feed().await;
    assert_eq!(titles(&after_delete), ["Two"]);
    assert_eq!(after_delete.articles_count, 1);

    // Which articles it holds follows the reader's follows at once.
    let carol = world.user("carol").await;
    world.article_by(&carol, "Three", &[]).await;
    assert_eq!(titles(&feed().await), ["Two"]);
    world.follow(&bob, &carol).await;
    assert_eq!(titles(&feed().await), ["Three", "Two"]);
    world.unfollow(&bob, &carol).await;
    assert_eq!(titles(&feed().await), ["Two"]);
    world.article_by(&alice, "Four", &[]).await;
    assert_eq!(titles(&feed().await), ["Four", "Two"]);
}
