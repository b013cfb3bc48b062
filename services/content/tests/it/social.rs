//! Comments, follows, profiles, the feed and the follower fan-out stream.

use crate::support;

use futures::StreamExt;
use quill_proto::content::v1 as pb;
use support::{User, World, as_user, assert_code, titles, violated_fields};
use tonic::{Code, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_are_added_listed_newest_first_and_deleted() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let vera = world.user_with_role("vera", "viewer").await;
    let article = world.article_by(&alice, "Discuss", &[]).await;
    let add = |user: &support::User, body: &str| {
        as_user(
            user,
            pb::AddCommentRequest {
                slug: article.slug.clone(),
                body: body.to_owned(),
            },
        )
    };
    // Viewers may comment.
    let first = world
        .client()
        .add_comment(add(&vera, "  First! 🦀 "))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.body, "First! 🦀");
    assert_eq!(first.article_slug, article.slug);
    assert_eq!(first.author.clone().unwrap().username, "vera");
    let second = world
        .client()
        .add_comment(add(&alice, "'; DELETE FROM comments; --"))
        .await
        .unwrap()
        .into_inner();

    let status = assert_code(
        world.client().add_comment(add(&alice, "   ")).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["body"]);
    assert_code(
        world
            .client()
            .add_comment(Request::new(pb::AddCommentRequest {
                slug: article.slug.clone(),
                body: "anonymous".into(),
            }))
            .await,
        Code::Unauthenticated,
    );

    world.follow(&vera, &alice).await;
    let listed = world
        .client()
        .list_comments(as_user(
            &vera,
            pb::ListCommentsRequest {
                slug: article.slug.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .comments;
    assert_eq!(
        listed.iter().map(|c| c.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    assert!(
        listed[0].author.as_ref().unwrap().following,
        "vera follows alice"
    );
    assert!(!listed[1].author.as_ref().unwrap().following);

    world
        .client()
        .delete_comment(as_user(
            &vera,
            pb::DeleteCommentRequest {
                slug: article.slug.clone(),
                id: first.id,
            },
        ))
        .await
        .unwrap();
    assert_code(
        world
            .client()
            .delete_comment(as_user(
                &vera,
                pb::DeleteCommentRequest {
                    slug: article.slug.clone(),
                    id: first.id,
                },
            ))
            .await,
        Code::NotFound,
    );
    let left = world
        .client()
        .list_comments(pb::ListCommentsRequest {
            slug: article.slug.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .comments;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "'; DELETE FROM comments; --");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_deletion_belongs_to_its_author_the_article_author_or_a_moderator() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let admin = world.user_with_role("root", "admin").await;
    let article = world.article_by(&alice, "Thread", &[]).await;
    let other = world.article_by(&alice, "Other thread", &[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let comment = world
            .client()
            .add_comment(as_user(
                &bob,
                pb::AddCommentRequest {
                    slug: article.slug.clone(),
                    body: "bob says".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        ids.push(comment.id);
    }
    let delete = |user: &support::User, slug: &str, id: i64| {
        as_user(
            user,
            pb::DeleteCommentRequest {
                slug: slug.to_owned(),
                id,
            },
        )
    };
    assert_code(
        world
            .client()
            .delete_comment(delete(&carol, &article.slug, ids[0]))
            .await,
        Code::PermissionDenied,
    );
    // A comment is addressed through its own article only.
    assert_code(
        world
            .client()
            .delete_comment(delete(&bob, &other.slug, ids[0]))
            .await,
        Code::NotFound,
    );
    let count = || async {
        world
            .client()
            .list_comments(pb::ListCommentsRequest {
                slug: article.slug.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .comments
            .len()
    };
    assert_eq!(count().await, 3, "nothing changed");

    world
        .client()
        .delete_comment(delete(&bob, &article.slug, ids[0]))
        .await
        .unwrap();
    world
        .client()
        .delete_comment(delete(&alice, &article.slug, ids[1]))
        .await
        .unwrap();
    world
        .client()
        .delete_comment(delete(&admin, &article.slug, ids[2]))
        .await
        .unwrap();
    assert_eq!(count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_follows_and_unfollows() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;

    // Alice has never acted in content: her profile comes from auth.
    let profile = world
        .client()
        .get_profile(pb::GetProfileRequest {
            username: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profile.id, alice.id);
    assert!(!profile.following);
    assert_code(
        world
            .client()
            .get_profile(pb::GetProfileRequest {
                username: "nobody".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .get_profile(pb::GetProfileRequest {
                username: "'; DROP TABLE authors; --".into(),
            })
            .await,
        Code::NotFound,
    );

    let follow = || {
        as_user(
            &bob,
            pb::FollowRequest {
                username: "ALICE".into(),
            },
        )
    };
    let followed = world.client().follow(follow()).await.unwrap().into_inner();
    assert!(followed.following);
    assert_eq!(followed.username, "alice");
    assert!(
        world
            .client()
            .follow(follow())
            .await
            .unwrap()
            .into_inner()
            .following
    );
    let seen_by_bob = world
        .client()
        .get_profile(as_user(
            &bob,
            pb::GetProfileRequest {
                username: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(seen_by_bob.following);

    let status = assert_code(
        world
            .client()
            .follow(as_user(
                &alice,
                pb::FollowRequest {
                    username: "alice".into(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["username"]);
    assert_code(
        world
            .client()
            .follow(as_user(
                &alice,
                pb::FollowRequest {
                    username: "ghost".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_code(
        world
            .client()
            .follow(Request::new(pb::FollowRequest {
                username: "alice".into(),
            }))
            .await,
        Code::Unauthenticated,
    );

    let unfollow = || {
        as_user(
            &bob,
            pb::UnfollowRequest {
                username: "alice".into(),
            },
        )
    };
    assert!(
        !world
            .client()
            .unfollow(unfollow())
            .await
            .unwrap()
            .into_inner()
            .following
    );
    assert!(
        !world
            .client()
            .unfollow(unfollow())
            .await
            .unwrap()
            .into_inner()
            .following
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_shows_followed_authors_newest_first() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let reader = world.user("reader").await;
    world.article_by(&alice, "Alice 1", &[]).await;
    world.article_by(&carol, "Carol 1", &[]).await;
    world.article_by(&bob, "Bob 1", &[]).await;
    world.article_by(&alice, "Alice 2", &[]).await;
    world.follow(&reader, &alice).await;
    world.follow(&reader, &bob).await;

    let feed = |limit, offset, cursor: Option<String>| {
        as_user(
            &reader,
            pb::FeedRequest {
                limit,
                offset,
                cursor,
            },
        )
    };
    let page = world
        .client()
        .feed(feed(0, 0, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&page), ["Alice 2", "Bob 1", "Alice 1"]);
    assert_eq!(page.articles_count, 3);
    assert!(page.next_cursor.is_none());
    assert!(
        page.articles
            .iter()
            .all(|a| a.author.as_ref().unwrap().following)
    );

    let first = world
        .client()
        .feed(feed(2, 0, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&first), ["Alice 2", "Bob 1"]);
    let rest = world
        .client()
        .feed(feed(2, 0, first.next_cursor.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&rest), ["Alice 1"]);
    assert!(rest.next_cursor.is_none());
    let by_offset = world
        .client()
        .feed(feed(2, 2, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&by_offset), ["Alice 1"]);

    let empty = world
        .client()
        .feed(as_user(&alice, pb::FeedRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.articles.is_empty());
    assert_eq!(empty.articles_count, 0);
    assert_code(
        world
            .client()
            .feed(Request::new(pb::FeedRequest::default()))
            .await,
        Code::Unauthenticated,
    );
    let status = assert_code(
        world.client().feed(feed(0, 0, Some("bogus".into()))).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["cursor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_ids_stream_in_batches() {
    let world = World::start().await;
    let star = world.user("star").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let fan = world.user(&format!("fan{i}")).await;
        world.follow(&fan, &star).await;
        expected.push(fan.id);
    }
    expected.sort();
    let stream = |batch_size| {
        let mut client = world.notification_client();
        let user_id = star.id.clone();
        async move {
            let mut stream = client
                .stream_follower_ids(pb::StreamFollowerIdsRequest {
                    user_id,
                    batch_size,
                    as_of: None,
                })
                .await
                .unwrap()
                .into_inner();
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch.unwrap().user_ids);
            }
            batches
        }
    };
    let batches = stream(2).await;
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(batches.concat(), expected);
    let exact = stream(5).await;
    assert_eq!(exact.iter().map(Vec::len).collect::<Vec<_>>(), [5]);
    let default = stream(0).await;
    assert_eq!(default.concat(), expected);

    let mut client = world.notification_client();
    let none = client
        .stream_follower_ids(pb::StreamFollowerIdsRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            batch_size: 0,
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.collect::<Vec<_>>().await.is_empty());
    let status = assert_code(
        client
            .stream_follower_ids(pb::StreamFollowerIdsRequest {
                user_id: "not-an-id".into(),
                batch_size: 0,
                as_of: None,
            })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["user_id"]);
}

/// A fan-out consumed late asks who followed as of the event: a follow
/// since does not count, an unfollow since does not remove, and a follow,
/// unfollow and follow again counts only in its periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_ids_as_of_a_moment() {
    let world = World::start().await;
    let star = world.user("star").await;
    let (steady, leaver, latecomer, returner) = (
        world.user("steady").await,
        world.user("leaver").await,
        world.user("latecomer").await,
        world.user("returner").await,
    );
    world.follow(&steady, &star).await;
    world.follow(&leaver, &star).await;
    world.follow(&returner, &star).await;
    let before_the_gap = tick().await;
    world.unfollow(&leaver, &star).await;
    world.unfollow(&returner, &star).await;
    world.follow(&latecomer, &star).await;
    let in_the_gap = tick().await;
    world.follow(&returner, &star).await;

    let followers = |as_of: Option<chrono::DateTime<chrono::Utc>>| {
        let mut client = world.notification_client();
        let user_id = star.id.clone();
        async move {
            let mut stream = client
                .stream_follower_ids(pb::StreamFollowerIdsRequest {
                    user_id,
                    // Batches of one: the keyset walks both periods' tables.
                    batch_size: 1,
                    as_of: as_of.map(quill_platform::time::to_proto),
                })
                .await
                .unwrap()
                .into_inner();
            let mut ids = Vec::new();
            while let Some(batch) = stream.next().await {
                ids.extend(batch.unwrap().user_ids);
            }
            ids
        }
    };
    let sorted = |users: &[&User]| {
        let mut ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        followers(Some(before_the_gap)).await,
        sorted(&[&steady, &leaver, &returner])
    );
    assert_eq!(
        followers(Some(in_the_gap)).await,
        sorted(&[&steady, &latecomer])
    );
    assert_eq!(
        followers(None).await,
        sorted(&[&steady, &latecomer, &returner])
    );
    let before_anyone = before_the_gap - chrono::Duration::days(1);
    assert!(followers(Some(before_anyone)).await.is_empty());

    let status = assert_code(
        world
            .notification_client()
            .stream_follower_ids(pb::StreamFollowerIdsRequest {
                user_id: star.id.clone(),
                batch_size: 0,
                as_of: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
            })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["as_of"]);
}

/// A moment strictly between what happened before and what happens after.
async fn tick() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    now
}
