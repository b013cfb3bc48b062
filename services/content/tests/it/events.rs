//! Content's events, through the real broker: what it publishes for each
//! change, and how auth's `user.*` events reach its authors read-model (a
//! banned author disappears from lists, the feed, comments and lookups; a
//! rename shows in author data).

use crate::support;

use std::time::Duration;

use quill_proto::{
    auth::v1 as auth_pb,
    content::v1 as pb,
    events::v1::{ArticleSnapshot, Envelope, envelope::Payload},
};
use support::{User, World, as_user, assert_code, eventually, titles, with_token};
use tonic::Code;

const CONTENT_KEYS: &[&str] = &["article.*", "comment.*", "user.followed"];

fn article_of(envelope: &Envelope) -> ArticleSnapshot {
    match envelope.payload.clone() {
        Some(Payload::ArticlePublished(e)) => e.article,
        Some(Payload::ArticleUpdated(e)) => e.article,
        Some(Payload::CommentAdded(e)) => e.article,
        Some(Payload::ArticleFavorited(e)) => e.article,
        other => panic!("no article in {other:?}"),
    }
    .expect("article snapshot")
}

fn assert_from_content(event: &Envelope, routing_key: &str) {
    assert_eq!(event.r#type, routing_key);
    assert_eq!(event.producer, "content");
    assert!(event.event_id.parse::<uuid::Uuid>().is_ok());
}

/// A new article's event carries its author's followers, in id order, so
/// the fan-out need not call content back; past what an event carries it
/// carries none, and the fan-out streams them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_articles_event_carries_its_authors_followers_unless_too_many() {
    let world = World::start().await;
    let (alice, bob, carol) = (
        world.user("alice").await,
        world.user("bob").await,
        world.user("carol").await,
    );
    world.follow(&bob, &alice).await;
    world.follow(&carol, &alice).await;
    let probe = world.auth.probe("probe", &["article.published"]).await;
    let followers = |event: &Envelope| match &event.payload {
        Some(Payload::ArticlePublished(e)) => e.followers.clone().map(|f| f.user_ids),
        other => panic!("not a new article: {other:?}"),
    };

    world.article_by(&alice, "Followed", &[]).await;
    let mut expected = vec![bob.id.clone(), carol.id.clone()];
    expected.sort();
    assert_eq!(followers(&probe.next().await), Some(expected));

    world.article_by(&bob, "Unfollowed", &[]).await;
    assert_eq!(followers(&probe.next().await), Some(vec![]));

    let pool = world.content_db().await;
    let followed_by = |count: i32| {
        sqlx::query(
            "INSERT INTO follows (follower_id, followee_id) \
             SELECT gen_random_uuid(), $1::uuid FROM generate_series(1, $2)",
        )
        .bind(&alice.id)
        .bind(count)
        .execute(&pool)
    };
    // As many as an event carries: larger than one AMQP frame, too.
    followed_by(498).await.unwrap();
    world.article_by(&alice, "Popular", &[]).await;
    let carried = followers(&probe.next().await).expect("500 followers are carried");
    assert_eq!(carried.len(), 500);
    assert!(carried.is_sorted());
    followed_by(1).await.unwrap();
    world.article_by(&alice, "Too popular", &[]).await;
    assert_eq!(followers(&probe.next().await), None, "501 followers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_publishes_its_event_with_the_state_consumers_need() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let probe = world.auth.probe("probe", CONTENT_KEYS).await;
    let mut client = world.client();

    let article = world.article_by(&alice, "Ferris", &["rust", "crabs"]).await;
    let published = probe.next().await;
    assert_from_content(&published, "article.published");
    let snapshot = ArticleSnapshot {
        id: article.id.clone(),
        slug: article.slug.clone(),
        title: "Ferris".into(),
        description: "About Ferris".into(),
        author_id: alice.id.clone(),
        author_username: "alice".into(),
        tags: vec!["crabs".into(), "rust".into()],
    };
    assert_eq!(article_of(&published), snapshot);

    let renamed = client
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: article.slug.clone(),
                title: Some("Ferris the crab".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let updated = probe.next().await;
    assert_from_content(&updated, "article.updated");
    let Some(Payload::ArticleUpdated(change)) = &updated.payload else {
        panic!("{updated:?}");
    };
    assert_eq!(change.previous_slug.as_deref(), Some(article.slug.as_str()));
    assert_eq!(
        article_of(&updated),
        ArticleSnapshot {
            slug: renamed.slug.clone(),
            title: "Ferris the crab".into(),
            ..snapshot.clone()
        }
    );
    client
        .update_article(as_user(
            &alice,
            pb::UpdateArticleRequest {
                slug: renamed.slug.clone(),
                body: Some("New body.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let Some(Payload::ArticleUpdated(change)) = probe.next().await.payload else {
        panic!("not an update");
    };
    assert_eq!(change.previous_slug, None, "the slug did not change");

    let comment = client
        .add_comment(as_user(
            &bob,
            pb::AddCommentRequest {
                slug: renamed.slug.clone(),
                body: "Nice crab.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let added = probe.next().await;
    assert_from_content(&added, "comment.added");
    let Some(Payload::CommentAdded(c)) = &added.payload else {
        panic!("{added:?}");
    };
    assert_eq!(
        (
            c.comment_id,
            c.body.as_str(),
            c.commenter_id.as_str(),
            c.commenter_username.as_str()
        ),
        (comment.id, "Nice crab.", bob.id.as_str(), "bob")
    );
    let commented = article_of(&added);
    assert_eq!(
        (commented.id.as_str(), commented.author_id.as_str()),
        (article.id.as_str(), alice.id.as_str()),
        "the article's author, to notify"
    );

    for _ in 0..2 {
        client
            .favorite_article(as_user(
                &bob,
                pb::FavoriteArticleRequest {
                    slug: renamed.slug.clone(),
                },
            ))
            .await
            .unwrap();
    }
    let favorited = probe.next().await;
    assert_from_content(&favorited, "article.favorited");
    let Some(Payload::ArticleFavorited(f)) = &favorited.payload else {
        panic!("{favorited:?}");
    };
    assert_eq!(
        (f.user_id.as_str(), f.username.as_str()),
        (bob.id.as_str(), "bob")
    );
    assert_eq!(article_of(&favorited).author_id, alice.id);

    world.follow(&bob, &alice).await;
    world.follow(&bob, &alice).await;
    let followed = probe.next().await;
    assert_from_content(&followed, "user.followed");
    let Some(Payload::UserFollowed(f)) = &followed.payload else {
        panic!("{followed:?}");
    };
    assert_eq!(
        (
            f.follower_id.as_str(),
            f.follower_username.as_str(),
            f.followee_id.as_str(),
            f.followee_username.as_str()
        ),
        (bob.id.as_str(), "bob", alice.id.as_str(), "alice")
    );

    client
        .delete_article(as_user(
            &alice,
            pb::DeleteArticleRequest {
                slug: renamed.slug.clone(),
            },
        ))
        .await
        .unwrap();
    let deleted = probe.next().await;
    assert_from_content(&deleted, "article.deleted");
    let Some(Payload::ArticleDeleted(d)) = &deleted.payload else {
        panic!("{deleted:?}");
    };
    assert_eq!(
        (d.article_id.as_str(), d.slug.as_str(), d.author_id.as_str()),
        (
            article.id.as_str(),
            renamed.slug.as_str(),
            alice.id.as_str()
        )
    );

    // The second favorite and follow changed nothing and announced nothing.
    assert!(
        probe
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_publish_nothing() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let article = world.article_by(&alice, "Mine", &[]).await;
    let probe = world.auth.probe("probe", CONTENT_KEYS).await;
    let mut client = world.client();

    assert_code(
        client
            .update_article(as_user(
                &bob,
                pb::UpdateArticleRequest {
                    slug: article.slug.clone(),
                    title: Some("Stolen".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        client
            .add_comment(as_user(
                &bob,
                pb::AddCommentRequest {
                    slug: "no-such-article".into(),
                    body: "Hello?".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    client
        .unfollow(as_user(
            &bob,
            pb::UnfollowRequest {
                username: "alice".into(),
            },
        ))
        .await
        .unwrap();
    assert!(
        probe
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    probe.close().await;
}

async fn list_titles(world: &World, viewer: Option<&User>) -> Vec<String> {
    titles(
        &world
            .list(viewer, pb::ListArticlesRequest::default())
            .await
            .unwrap(),
    )
}

async fn feed_titles(world: &World, viewer: &User) -> Vec<String> {
    titles(
        &world
            .client()
            .feed(as_user(viewer, pb::FeedRequest::default()))
            .await
            .unwrap()
            .into_inner(),
    )
}

async fn comment_bodies(world: &World, slug: &str) -> Vec<String> {
    world
        .client()
        .list_comments(pb::ListCommentsRequest {
            slug: slug.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .comments
        .into_iter()
        .map(|c| c.body)
        .collect()
}

async fn set_banned(world: &World, admin: &User, username: &str, banned: bool) {
    let mut auth = world.auth.client();
    if banned {
        auth.ban_user(with_token(
            &admin.token,
            auth_pb::BanUserRequest {
                username: username.into(),
            },
        ))
        .await
        .expect("ban");
    } else {
        auth.unban_user(with_token(
            &admin.token,
            auth_pb::UnbanUserRequest {
                username: username.into(),
            },
        ))
        .await
        .expect("unban");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_in_auth_hides_the_users_articles_and_comments_until_lifted() {
    let world = World::start().await;
    let admin = world.user_with_role("root", "admin").await;
    let mallory = world.user("mallory").await;
    let bob = world.user("bob").await;
    let reader = world.user("reader").await;
    let spam = world.article_by(&mallory, "Spam", &["ads"]).await;
    let bobs = world.article_by(&bob, "Bob's", &[]).await;
    world.follow(&reader, &mallory).await;
    world.follow(&reader, &bob).await;
    for (author, body) in [(&mallory, "Buy now"), (&bob, "Thanks")] {
        world
            .client()
            .add_comment(as_user(
                author,
                pb::AddCommentRequest {
                    slug: bobs.slug.clone(),
                    body: body.into(),
                },
            ))
            .await
            .unwrap();
    }
    assert_eq!(list_titles(&world, None).await, ["Bob's", "Spam"]);

    set_banned(&world, &admin, "mallory", true).await;

    eventually("the ban reaches content", || async {
        list_titles(&world, None).await == ["Bob's"]
    })
    .await;
    let page = world
        .list(Some(&reader), pb::ListArticlesRequest::default())
        .await
        .unwrap();
    assert_eq!(page.articles_count, 1, "the count agrees with the page");
    assert_eq!(feed_titles(&world, &reader).await, ["Bob's"]);
    assert_eq!(comment_bodies(&world, &bobs.slug).await, ["Thanks"]);
    assert_code(world.get(None, &spam.slug).await, Code::NotFound);
    let by_tag = world
        .list(
            None,
            pb::ListArticlesRequest {
                tag: Some("ads".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((by_tag.articles.len(), by_tag.articles_count), (0, 0));
    assert_code(
        world
            .client()
            .list_comments(pb::ListCommentsRequest {
                slug: spam.slug.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );

    set_banned(&world, &admin, "mallory", false).await;

    eventually("the lifted ban reaches content", || async {
        list_titles(&world, None).await == ["Bob's", "Spam"]
    })
    .await;
    assert_eq!(feed_titles(&world, &reader).await, ["Bob's", "Spam"]);
    assert_eq!(
        comment_bodies(&world, &bobs.slug).await,
        ["Thanks", "Buy now"]
    );
    assert_eq!(world.get(None, &spam.slug).await.unwrap().title, "Spam");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_in_auth_shows_in_article_author_data() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let article = world.article_by(&alice, "Hello", &[]).await;
    assert_eq!(article.author.as_ref().unwrap().username, "alice");

    world
        .auth
        .client()
        .update_user(with_token(
            &alice.token,
            auth_pb::UpdateUserRequest {
                username: Some("alicia".into()),
                bio: Some("Renamed.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    eventually("the rename reaches content", || async {
        let author = world
            .get(None, &article.slug)
            .await
            .unwrap()
            .author
            .unwrap();
        author.username == "alicia" && author.bio.as_deref() == Some("Renamed.")
    })
    .await;
    let by_new_name = world
        .list(
            None,
            pb::ListArticlesRequest {
                author: Some("alicia".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(titles(&by_new_name), ["Hello"]);
    assert_eq!(
        by_new_name.articles[0].author.as_ref().unwrap().username,
        "alicia"
    );
}

/// A comment or a favorite announces the article as its event was built;
/// an edit that lands between that read and the write (here: held open
/// while both are sent) makes the write read the article again, so the
/// event names the article as it is, not by a slug it no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_or_favorite_meeting_an_edit_announces_the_edited_article() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let probe = world.auth.probe("probe", CONTENT_KEYS).await;
    let article = world.article_by(&alice, "Before", &["old"]).await;
    assert_from_content(&probe.next().await, "article.published");

    // An edit, as update_article makes one, not yet committed.
    let pool = sqlx::PgPool::connect(&world.content.db.url).await.unwrap();
    let mut edit = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE articles SET slug = 'after', title = 'After', updated_at = clock_timestamp() \
         WHERE slug = $1",
    )
    .bind(&article.slug)
    .execute(&mut *edit)
    .await
    .unwrap();
    let mut client = world.client();
    let mut favorer = world.client();
    let comment = tokio::spawn(async move {
        client
            .add_comment(as_user(
                &bob,
                pb::AddCommentRequest {
                    slug: "before".into(),
                    body: "Nice.".into(),
                },
            ))
            .await
    });
    let favorite = tokio::spawn({
        let alice = alice.clone();
        async move {
            favorer
                .favorite_article(as_user(
                    &alice,
                    pb::FavoriteArticleRequest {
                        slug: "before".into(),
                    },
                ))
                .await
        }
    });
    // Both have read the article as it was and wait on the edit's lock.
    eventually("both writes wait on the edit", || async {
        support::lock_waiters(&pool).await == 2
    })
    .await;
    edit.commit().await.unwrap();

    // Read again, the article is no longer there by its old slug.
    assert_code(comment.await.unwrap(), Code::NotFound);
    assert_code(favorite.await.unwrap(), Code::NotFound);
    let renamed = world.get(None, "after").await.unwrap();
    assert_eq!(renamed.favorites_count, 0);
    let announced = probe.next_within(Duration::from_millis(500)).await;
    assert!(
        announced.is_none(),
        "no event names the article by its old slug: {announced:?}"
    );
}
