//! The events auth publishes: each change other services copy leaves an
//! envelope in the outbox in the change's own transaction, and the relay
//! publishes it to the exchange; a refused change announces nothing.

use crate::support;

use std::time::Duration;

use quill_proto::{
    auth::v1 as pb,
    events::v1::{Envelope, UserSnapshot, envelope::Payload},
};
use sqlx::PgPool;
use support::{Harness, assert_code, authed};
use tonic::Code;

const USER_KEYS: &[&str] = &["user.*"];

/// The user snapshot of a `user.*` event, and the `banned` flag of a ban.
fn user_of(envelope: &Envelope) -> (UserSnapshot, Option<bool>) {
    match envelope.payload.clone() {
        Some(Payload::UserRegistered(e)) => (e.user.expect("user"), None),
        Some(Payload::UserUpdated(e)) => (e.user.expect("user"), None),
        Some(Payload::UserBanned(e)) => (e.user.expect("user"), Some(e.banned)),
        other => panic!("not a user event: {other:?}"),
    }
}

/// Outbox rows of `routing_key`, published or not.
async fn outbox_rows(h: &Harness, routing_key: &str) -> i64 {
    let pool = PgPool::connect(&h.auth.db.url).await.expect("auth db");
    let count = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE routing_key = $1")
        .bind(routing_key)
        .fetch_one(&pool)
        .await
        .expect("count outbox rows");
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_publishes_user_registered_with_the_new_user() {
    let h = Harness::start().await;
    let probe = h.auth.probe("probe", USER_KEYS).await;

    let ada = h.register("ada").await;

    let event = probe.next().await;
    assert_eq!(event.r#type, "user.registered");
    assert_eq!(event.producer, "auth");
    assert!(event.event_id.parse::<uuid::Uuid>().is_ok());
    assert!(event.occurred_at.is_some());
    let (user, _) = user_of(&event);
    assert_eq!(
        user,
        UserSnapshot {
            id: ada.user.id.clone(),
            username: "ada".into(),
            email: "ada@example.com".into(),
            bio: None,
            image: None,
            banned: false,
            // The row's version, as GetUsersByIds reports it too.
            updated_at: ada.user.updated_at,
        }
    );
    assert_eq!(outbox_rows(&h, "user.registered").await, 1);
    let pool = PgPool::connect(&h.auth.db.url).await.unwrap();
    let published: bool =
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1")
            .bind(event.event_id.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(published, "the relay marks the row published");
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_announces_nothing() {
    let h = Harness::start().await;
    let probe = h.auth.probe("probe", USER_KEYS).await;
    h.register("bea").await;
    assert_eq!(probe.next().await.r#type, "user.registered");

    for (email, username) in [("BEA@example.com", "other"), ("x@example.com", "BEA")] {
        assert_code(
            h.client()
                .register(pb::RegisterRequest {
                    email: email.into(),
                    username: username.into(),
                    password: "a long enough password".into(),
                    client: None,
                })
                .await,
            Code::AlreadyExists,
        );
    }

    assert_eq!(outbox_rows(&h, "user.registered").await, 1);
    assert!(
        probe
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing published for the refused registrations"
    );
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_changes_publish_user_updated_and_a_password_change_alone_does_not() {
    let h = Harness::start().await;
    let cy = h.register("cy").await;
    let probe = h.auth.probe("probe", &["user.updated"]).await;
    let token = &cy.tokens.access_token;

    h.client()
        .update_user(authed(
            pb::UpdateUserRequest {
                username: Some("cy2".into()),
                email: Some("cy2@example.com".into()),
                bio: Some("Writes.".into()),
                image: Some("https://example.com/cy.png".into()),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
    let event = probe.next().await;
    assert_eq!(event.r#type, "user.updated");
    assert_eq!(event.producer, "auth");
    let version = user_of(&event).0.updated_at;
    assert!(
        version.as_ref().map(|t| (t.seconds, t.nanos))
            > cy.user.updated_at.as_ref().map(|t| (t.seconds, t.nanos)),
        "an update moves the version forward"
    );
    assert_eq!(
        user_of(&event).0,
        UserSnapshot {
            id: cy.user.id.clone(),
            username: "cy2".into(),
            email: "cy2@example.com".into(),
            bio: Some("Writes.".into()),
            image: Some("https://example.com/cy.png".into()),
            banned: false,
            updated_at: version,
        }
    );

    h.client()
        .update_user(authed(
            pb::UpdateUserRequest {
                password: Some("a brand new password".into()),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
    // A refused change announces nothing either.
    h.register("taken").await;
    assert_code(
        h.client()
            .update_user(authed(
                pb::UpdateUserRequest {
                    username: Some("taken".into()),
                    ..Default::default()
                },
                token,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(outbox_rows(&h, "user.updated").await, 1);
    assert!(
        probe
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_and_its_lifting_publish_user_banned_with_the_flag() {
    let h = Harness::start().await;
    let dee = h.register("dee").await;
    let admin = h.admin("root_dee").await;
    let probe = h.auth.probe("probe", &["user.banned"]).await;
    let mut client = h.client();

    client
        .ban_user(authed(
            pb::BanUserRequest {
                username: "dee".into(),
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap();
    let ban = probe.next().await;
    assert_eq!(ban.r#type, "user.banned");
    assert_eq!(ban.producer, "auth");
    let (user, banned) = user_of(&ban);
    assert_eq!(banned, Some(true));
    assert!(user.banned);
    assert_eq!(
        (user.id.as_str(), user.username.as_str()),
        (dee.user.id.as_str(), "dee")
    );

    client
        .unban_user(authed(
            pb::UnbanUserRequest {
                username: "dee".into(),
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap();
    let lifted = probe.next().await;
    let (user, banned) = user_of(&lifted);
    assert_eq!(banned, Some(false));
    assert!(!user.banned);
    assert_eq!(user.id, dee.user.id);

    // Only an admin may ban; a refused ban announces nothing.
    assert_code(
        client
            .ban_user(authed(
                pb::BanUserRequest {
                    username: "root_dee".into(),
                },
                &dee.tokens.access_token,
            ))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(outbox_rows(&h, "user.banned").await, 2);
    probe.close().await;
}

/// Events of one type that the relay finds together leave in one message;
/// the probe, as a consumer, reads them one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_relay_finds_together_are_read_one_by_one() {
    let h = Harness::start().await;
    let probe = h.auth.probe("probe", USER_KEYS).await;
    let registered = |name: &str| {
        quill_events::new_envelope(
            "auth",
            Payload::UserRegistered(quill_proto::events::v1::UserRegistered {
                user: Some(UserSnapshot {
                    id: uuid::Uuid::new_v4().to_string(),
                    username: name.into(),
                    ..UserSnapshot::default()
                }),
            }),
        )
    };
    let (first, second) = (registered("first"), registered("second"));
    // Committed together behind the server's back: its relay's poll finds
    // both in one claim.
    let pool = PgPool::connect(&h.auth.db.url).await.expect("auth db");
    let mut tx = pool.begin().await.expect("begin");
    for envelope in [&first, &second] {
        quill_events::enqueue(&mut tx, envelope)
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    pool.close().await;

    let read = [probe.next().await, probe.next().await];
    assert_eq!(read, [first, second]);
    assert!(
        probe
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "each once"
    );
}
