//! Publishing, reading, editing and deleting articles, and who may.

use crate::support;

use quill_proto::content::v1 as pb;
use support::{World, as_user, assert_code, violated_fields, with_token};
use tonic::{Code, Request};

pub(crate) fn new_article(title: &str, tags: &[&str]) -> pb::CreateArticleRequest {
    pb::CreateArticleRequest {
        title: title.to_owned(),
        description: "A description".to_owned(),
        body: "A body".to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_publishes_and_anyone_reads_it() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let created = world
        .client()
        .create_article(as_user(
            &alice,
            pb::CreateArticleRequest {
                title: "  How to train your dragon ".into(),
                description: "Ever wonder how?".into(),
                body: "You have to believe".into(),
                tags: vec![
                    "reactjs".into(),
                    " angularjs ".into(),
                    "dragons".into(),
                    "reactjs".into(),
                    "".into(),
                ],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.slug, "how-to-train-your-dragon");
    assert_eq!(created.title, "How to train your dragon");
    assert_eq!(created.tags, ["angularjs", "dragons", "reactjs"]);
    assert!(!created.favorited);
    assert_eq!(created.favorites_count, 0);
    let author = created.author.clone().unwrap();
    assert_eq!(author.username, "alice");
    assert_eq!(author.id, alice.id);
    assert!(!author.following);
    assert_eq!(created.created_at, created.updated_at);

    let read = world.get(None, &created.slug).await.unwrap();
    assert_eq!(read, created);
    let tags = world
        .client()
        .list_tags(pb::ListTagsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert_eq!(tags, ["angularjs", "dragons", "reactjs"]);
}

/// A write reads its user and writes on one pooled connection, and learns a
/// user new here from auth before it takes that connection: holding it
/// across the call, on a pool of one, the write would wait for a second
/// connection that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_users_new_here_run_on_a_pool_of_one_connection() {
    let world = World::start_unheard(|config| config.server.database.max_connections = 1).await;
    let (ada, bob) = (world.user("ada").await, world.user("bob").await);
    let article = world.article_by(&ada, "One connection", &["pool"]).await;
    assert_eq!(article.author.expect("author").username, "ada");
    let comment = world
        .client()
        .add_comment(as_user(
            &bob,
            pb::AddCommentRequest {
                slug: article.slug.clone(),
                body: "Read on the same one".into(),
            },
        ))
        .await
        .expect("comment by a user new here")
        .into_inner();
    assert_eq!(comment.author.expect("author").username, "bob");
    // The answer to a favorite names the article's author; one missing
    // from the read-model is asked of auth with the write's connection
    // already given back.
    let db = world.content_db().await;
    sqlx::query("DELETE FROM authors WHERE username = 'ada'")
        .execute(&db)
        .await
        .unwrap();
    let carol = world.user("carol").await;
    let favorited = world
        .client()
        .favorite_article(as_user(
            &carol,
            pb::FavoriteArticleRequest {
                slug: article.slug.clone(),
            },
        ))
        .await
        .expect("favorite by a user new here")
        .into_inner();
    assert_eq!(favorited.favorites_count, 1);
    assert!(favorited.favorited);
    assert_eq!(favorited.author.expect("author").username, "ada");
    let unfavorited = world
        .client()
        .unfavorite_article(as_user(
            &carol,
            pb::UnfavoriteArticleRequest {
                slug: article.slug.clone(),
            },
        ))
        .await
        .expect("unfavorite on the same connection")
        .into_inner();
    assert_eq!(unfavorited.favorites_count, 0);
    assert!(!unfavorited.favorited);
}

/// A favorite that meets the same user's favorite in flight (a double
/// click) answers as it stands once that one commits: favorited, and
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_favorite_racing_the_same_users_favorite_counts_it_once() {
    let world = World::start().await;
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let article = world.article_by(&alice, "Liked", &[]).await;
    let pool = world.content_db().await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO favorites (article_id, user_id) SELECT id, $2 FROM articles WHERE slug = $1",
    )
    .bind(&article.slug)
    .bind(bob.id.parse::<uuid::Uuid>().unwrap())
    .execute(&mut *other)
    .await
    .unwrap();
    let mut client = world.client();
    let request = as_user(
        &bob,
        pb::FavoriteArticleRequest {
            slug: article.slug.clone(),
        },
    );
    let favorite = tokio::spawn(async move { client.favorite_article(request).await });
    support::eventually("the favorite waits for the other", || async {
        support::lock_waiters(&pool).await == 1
    })
    .await;
    other.commit().await.unwrap();

    let answer = favorite.await.unwrap().unwrap().into_inner();
    assert!(answer.favorited);
    assert_eq!(answer.favorites_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_titles_get_distinct_slugs() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let first = world.article_by(&alice, "Same title", &[]).await;
    let second = world.article_by(&alice, "Same title", &[]).await;
    let third = world.article_by(&alice, "same TITLE!", &[]).await;
    assert_eq!(first.slug, "same-title");
    for other in [&second, &third] {
        let suffix = other.slug.strip_prefix("same-title-").unwrap();
        assert_eq!(suffix.len(), 6);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
    assert_ne!(second.slug, third.slug);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_unicode_titles_are_stored_verbatim_with_safe_slugs() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let cases = [
        ("'; DROP TABLE articles; --", "drop-table-articles"),
        ("%_\\", "article"),
        ("Привет мир", "privet-mir"),
        ("🦀 Rust 🦀", "crab-rust-crab"),
        ("日本語のタイトル", ""),
    ];
    for (title, slug) in cases {
        let article = world
            .article_by(
                &alice,
                title,
                &["'; DROP TABLE tags; --", "%_\\", "日本語", "🦀"],
            )
            .await;
        assert_eq!(article.title, title);
        if !slug.is_empty() {
            assert_eq!(article.slug, slug);
        }
        assert!(
            article
                .slug
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{}",
            article.slug
        );
        assert_eq!(
            article.tags,
            ["%_\\", "'; DROP TABLE tags; --", "日本語", "🦀"]
        );
        let read = world.get(None, &article.slug).await.unwrap();
        assert_eq!(read.title, title);
    }
    // Slugs that look like SQL or patterns simply match nothing.
    for slug in ["%", "_", "' OR '1'='1", "privet%"] {
        assert_code(world.get(None, slug).await, Code::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_missing_and_oversized_fields_are_refused_by_name() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let status = assert_code(
        world
            .client()
            .create_article(as_user(&alice, pb::CreateArticleRequest::default()))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["title", "description", "body"]);

    let status = assert_code(
        world
            .client()
            .create_article(as_user(
                &alice,
                pb::CreateArticleRequest {
                    title: "x".repeat(301),
                    description: "d".into(),
                    body: "b".repeat(100_001),
                    tags: (0..21).map(|i| format!("t{i}")).collect(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["title", "body", "tags"]);

    // The limits themselves are fine.
    let article = world
        .client()
        .create_article(as_user(
            &alice,
            pb::CreateArticleRequest {
                title: "я".repeat(300),
                description: "d".into(),
                body: "b".repeat(100_000),
                tags: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(article.body.len(), 100_000);

    let status = assert_code(
        world
            .client()
            .create_article(as_user(&alice, new_article("nul\0title", &[])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["title"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_valid_token_and_reads_refuse_a_bad_one() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "Hello", &[]).await;
    assert_code(
        world
            .client()
            .create_article(Request::new(new_article("Anonymous", &[])))
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        world
            .client()
            .create_article(with_token("not-a-jwt", new_article("Forged", &[])))
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        world
            .client()
            .get_article(with_token(
                "not-a-jwt",
                pb::GetArticleRequest {
                    slug: article.slug.clone(),
                },
            ))
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        world
            .client()
            .delete_article(Request::new(pb::DeleteArticleRequest {
                slug: article.slug.clone(),
            }))
            .await,
        Code::Unauthenticated,
    );
    assert!(world.get(None, &article.slug).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_publish() {
    let world = World::start().await;
    let vera = world.user_with_role("vera", "viewer").await;
    let status = assert_code(
        world
            .client()
            .create_article(as_user(&vera, new_article("Not allowed", &["x"])))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("article:create"), "{status:?}");
    let tags = world
        .client()
        .list_tags(pb::ListTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(tags.tags.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_updates_and_the_slug_follows_only_a_changed_title() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "First title", &["a", "b"]).await;

    let body_only = world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: article.slug.clone(),
                body: Some("New body".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(body_only.slug, "first-title");
    assert_eq!(body_only.body, "New body");
    assert_eq!(body_only.title, "First title");
    assert_eq!(body_only.tags, ["a", "b"]);
    let at = |a: &pb::Article| a.updated_at.map(|t| (t.seconds, t.nanos));
    assert!(at(&body_only) > at(&article));

    let same_title = world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: article.slug.clone(),
                title: Some("First title".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same_title.slug, "first-title");

    let renamed = world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: article.slug.clone(),
                title: Some("Второй заголовок".into()),
                tags: vec!["c".into(), "a".into()],
                replace_tags: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.slug, "vtoroi-zagolovok");
    assert_eq!(renamed.tags, ["a", "c"]);
    assert_eq!(renamed.body, "New body");
    assert_eq!(renamed.created_at, article.created_at);
    assert_code(world.get(None, "first-title").await, Code::NotFound);
    assert_eq!(world.get(None, &renamed.slug).await.unwrap(), renamed);

    // Taking a title whose slug another article holds gets a suffix.
    let other = world.article_by(&alice, "Taken", &[]).await;
    let moved = world
        .client()
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: renamed.slug.clone(),
                title: Some("Taken".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.slug, "taken");
    assert!(moved.slug.starts_with("taken-"), "{}", moved.slug);

    let status = assert_code(
        world
            .client()
            .update_article(as_user(
                &alice,
                pb::UpdateArticleRequest {
                    slug: moved.slug.clone(),
                    title: Some("   ".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["title"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_article_is_out_of_reach_but_a_moderator_may_act() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let admin = world.user_with_role("root", "admin").await;
    let article = world.article_by(&alice, "Mine", &["t"]).await;

    assert_code(
        world
            .client()
            .update_article(as_user(
                &bob,
                pb::UpdateArticleRequest {
                    slug: article.slug.clone(),
                    title: Some("Hijacked".into()),
                    body: Some("pwned".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        world
            .client()
            .delete_article(as_user(
                &bob,
                pb::DeleteArticleRequest {
                    slug: article.slug.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(world.get(None, &article.slug).await.unwrap(), article);

    let moderated = world
        .client()
        .update_article(as_user(
            &admin,
            pb::UpdateArticleRequest {
                slug: article.slug.clone(),
                body: Some("Edited by a moderator".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moderated.author.unwrap().username, "alice");
    world
        .client()
        .delete_article(as_user(
            &admin,
            pb::DeleteArticleRequest {
                slug: article.slug.clone(),
            },
        ))
        .await
        .unwrap();
    assert_code(world.get(None, &article.slug).await, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_deletes_and_unknown_slugs_are_not_found() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "Short lived", &["gone"]).await;
    world
        .client()
        .delete_article(as_user(
            &alice,
            pb::DeleteArticleRequest {
                slug: article.slug.clone(),
            },
        ))
        .await
        .unwrap();
    assert_code(world.get(None, &article.slug).await, Code::NotFound);
    // Its tag is no longer in use.
    let tags = world
        .client()
        .list_tags(pb::ListTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(tags.tags.is_empty());

    let missing = "no-such-article".to_owned();
    assert_code(
        world
            .client()
            .delete_article(as_user(
                &alice,
                pb::DeleteArticleRequest {
                    slug: missing.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .update_article(as_user(
                &alice,
                pb::UpdateArticleRequest {
                    slug: missing.clone(),
                    body: Some("x".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .favorite_article(as_user(
                &alice,
                pb::FavoriteArticleRequest {
                    slug: missing.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .list_comments(pb::ListCommentsRequest {
                slug: missing.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .add_comment(as_user(
                &alice,
                pb::AddCommentRequest {
                    slug: missing,
                    body: "hi".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favorites_are_idempotent_and_counted() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let carol = world.user_with_role("carol", "viewer").await;
    let article = world.article_by(&alice, "Liked", &[]).await;
    // Each answer is the article as its caller sees it, author included.
    world.follow(&bob, &alice).await;
    let favorite = |user: &support::User| {
        as_user(
            user,
            pb::FavoriteArticleRequest {
                slug: article.slug.clone(),
            },
        )
    };
    let once = world
        .client()
        .favorite_article(favorite(&bob))
        .await
        .unwrap()
        .into_inner();
    let twice = world
        .client()
        .favorite_article(favorite(&bob))
        .await
        .unwrap()
        .into_inner();
    assert!(once.favorited && twice.favorited);
    assert_eq!((once.favorites_count, twice.favorites_count), (1, 1));
    assert!(once.author.as_ref().unwrap().following);
    // Viewers may favorite.
    let by_viewer = world
        .client()
        .favorite_article(favorite(&carol))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_viewer.favorites_count, 2);
    assert!(!by_viewer.author.as_ref().unwrap().following);

    let as_alice = world.get(Some(&alice), &article.slug).await.unwrap();
    assert!(!as_alice.favorited);
    assert_eq!(as_alice.favorites_count, 2);
    let as_bob = world.get(Some(&bob), &article.slug).await.unwrap();
    assert!(as_bob.favorited);

    let unfavorite = || {
        as_user(
            &bob,
            pb::UnfavoriteArticleRequest {
                slug: article.slug.clone(),
            },
        )
    };
    let off = world
        .client()
        .unfavorite_article(unfavorite())
        .await
        .unwrap()
        .into_inner();
    let off_again = world
        .client()
        .unfavorite_article(unfavorite())
        .await
        .unwrap()
        .into_inner();
    assert!(!off.favorited && !off_again.favorited);
    assert_eq!((off.favorites_count, off_again.favorites_count), (1, 1));
    assert!(off.author.as_ref().unwrap().following);
    assert_eq!(off.author.unwrap().username, "alice");
}

/// PostgreSQL text cannot hold NUL: a slug or username with one names
/// nothing, and must say so rather than fail as a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_slug_or_username_is_not_found_not_internal() {
    let world = World::start().await;
    let alice = world.user("alice").await;

    let status = world.get(Some(&alice), "dra\0gons").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = world
        .client()
        .favorite_article(as_user(
            &alice,
            pb::FavoriteArticleRequest { slug: "\0".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = world
        .client()
        .get_profile(Request::new(pb::GetProfileRequest {
            username: "ali\0ce".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// A process remembers which tags exist and then publishes with a single
/// statement that only links them; a tag gone from the database after all
/// (deleted by hand) is created and linked again rather than dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_behind_the_service_is_linked_again() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let first = world
        .client()
        .create_article(as_user(&alice, new_article("First", &["kept", "lost"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.tags, ["kept", "lost"]);

    let pool = sqlx::PgPool::connect(&world.content.db.url).await.unwrap();
    sqlx::query("DELETE FROM tags WHERE name = 'lost'")
        .execute(&pool)
        .await
        .unwrap();
    let second = world
        .client()
        .create_article(as_user(&alice, new_article("Second", &["kept", "lost"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.tags, ["kept", "lost"]);
    let stored = world.get(None, &second.slug).await.unwrap();
    assert_eq!(
        stored.tags,
        ["kept", "lost"],
        "as stored, not only as answered"
    );
}

/// Tags are few and every article shares them: publishing must not lock
/// their rows, or concurrent publishers queue on (and PostgreSQL records a
/// MultiXact for) the same few rows. A transaction holding a tag's row
/// exclusively must not hold up an article with that tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_takes_no_lock_on_its_tags() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    world
        .client()
        .create_article(as_user(&alice, new_article("First", &["shared"])))
        .await
        .unwrap();

    let pool = sqlx::PgPool::connect(&world.content.db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    let held = sqlx::query("SELECT 1 FROM tags WHERE name = 'shared' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    assert_eq!(held.rows_affected(), 1, "the tag's row is held");
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        world
            .client()
            .create_article(as_user(&alice, new_article("Second", &["shared"]))),
    )
    .await
    .expect("publishing waited for a lock on its tag's row")
    .unwrap()
    .into_inner();
    let stored = world.get(None, &second.slug).await.unwrap();
    assert_eq!(stored.tags, ["shared"], "as stored, not only as answered");
    holder.rollback().await.unwrap();
}
