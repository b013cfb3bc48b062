//! The auth service through its gRPC API, against real PostgreSQL and Redis.

use crate::support;

use quill_platform::{service_identity::Service, token::TokenVerifier};
use quill_proto::auth::v1 as pb;
use serde_json::json;
use support::{Harness, assert_code, authed, claims_of, unsigned_token, violations};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_returns_a_creator_with_verifiable_tokens() {
    let h = Harness::start().await;
    let alice = h.register("alice").await;
    assert_eq!(alice.user.username, "alice");
    assert_eq!(alice.user.email, "alice@example.com");
    assert_eq!(alice.user.role(), pb::Role::Creator);
    assert_eq!(
        (alice.user.bio.as_deref(), alice.user.image.as_deref()),
        (None, None)
    );
    assert!(!alice.tokens.refresh_token.is_empty());

    let keys = h
        .client()
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let verifier = TokenVerifier::new(
        keys.keys
            .iter()
            .map(|k| (k.kid.as_str(), k.public_key_pem.as_str())),
        &keys.issuer,
        &keys.audience,
    )
    .unwrap();
    let claims = verifier.verify(&alice.tokens.access_token).unwrap();
    assert_eq!(claims.sub.to_string(), alice.user.id);
    assert_eq!(claims.sid.to_string(), alice.tokens.session_id);
    assert_eq!(
        claims.exp - claims.iat,
        900,
        "default access token lifetime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_email_and_username_are_refused_case_insensitively() {
    let h = Harness::start().await;
    h.register("bob").await;
    let mut client = h.client();
    let dup_email = client
        .register(pb::RegisterRequest {
            email: "BOB@example.com".into(),
            username: "bobby".into(),
            password: "long enough".into(),
            client: None,
        })
        .await;
    let status = assert_code(dup_email, Code::AlreadyExists);
    assert_eq!(
        violations(&status),
        vec![("email".into(), "has already been taken".into())]
    );

    let dup_name = client
        .register(pb::RegisterRequest {
            email: "other@example.com".into(),
            username: "BOB".into(),
            password: "long enough".into(),
            client: None,
        })
        .await;
    let status = assert_code(dup_name, Code::AlreadyExists);
    assert_eq!(
        violations(&status),
        vec![("username".into(), "has already been taken".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registrations_name_every_bad_field() {
    let h = Harness::start().await;
    let status = assert_code(
        h.client()
            .register(pb::RegisterRequest {
                email: "not-an-email".into(),
                username: "'; DROP TABLE users; --".into(),
                password: "short".into(),
                client: None,
            })
            .await,
        Code::InvalidArgument,
    );
    let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, vec!["email", "username", "password"]);

    // Unicode usernames are fine; the users table survived the injection attempt.
    let zoe = h.register("žoë_知").await;
    assert_eq!(zoe.user.username, "žoë_知");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_a_wrong_password_and_an_unknown_email_alike() {
    let h = Harness::start().await;
    let carol = h.register("carol").await;
    let mut client = h.client();
    for (email, password) in [
        (carol.user.email.clone(), "wrong password".to_owned()),
        ("nobody@example.com".to_owned(), carol.password.clone()),
    ] {
        let status = assert_code(
            client
                .login(pb::LoginRequest {
                    email,
                    password,
                    client: None,
                })
                .await,
            Code::Unauthenticated,
        );
        assert_eq!(
            violations(&status),
            vec![("email or password".into(), "is invalid".into())]
        );
    }
    let ok = h.login(&carol).await;
    assert_eq!(ok.user.unwrap().id, carol.user.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_user_requires_a_valid_token() {
    let h = Harness::start().await;
    let dave = h.register("dave").await;
    let mut client = h.client();
    let me = client
        .get_current_user(authed(
            pb::GetCurrentUserRequest {},
            &dave.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.id, dave.user.id);

    assert_code(
        client.get_current_user(pb::GetCurrentUserRequest {}).await,
        Code::Unauthenticated,
    );

    let mut tampered = dave.tokens.access_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let claims = claims_of(&dave.tokens.access_token);
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 60);
    let mut admin_claims = claims.clone();
    admin_claims["role"] = json!("admin");
    let foreign = Harness::start().await;

    for (what, token) in [
        ("tampered signature", tampered),
        ("expired", h.sign(&expired)),
        ("alg none", unsigned_token(&admin_claims)),
        ("signed by another key", foreign.sign(&admin_claims)),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let result = client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, &token))
            .await;
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_change_profile_fields_and_enforce_uniqueness() {
    let h = Harness::start().await;
    let erin = h.register("erin").await;
    h.register("frank").await;
    let mut client = h.client();
    let token = &erin.tokens.access_token;

    let updated = client
        .update_user(authed(
            pb::UpdateUserRequest {
                bio: Some("I like 🦀".into()),
                image: Some("https://example.com/e.png".into()),
                username: Some("erin2".into()),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.username.as_str(), updated.bio.as_deref()),
        ("erin2", Some("I like 🦀"))
    );
    assert_eq!(updated.email, erin.user.email, "unset fields are kept");

    let cleared = client
        .update_user(authed(
            pb::UpdateUserRequest {
                bio: Some(String::new()),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.bio, None);
    assert_eq!(cleared.image.as_deref(), Some("https://example.com/e.png"));

    let taken = client
        .update_user(authed(
            pb::UpdateUserRequest {
                email: Some("FRANK@example.com".into()),
                ..Default::default()
            },
            token,
        ))
        .await;
    assert_eq!(
        violations(&assert_code(taken, Code::AlreadyExists))[0].0,
        "email"
    );
    let bad = client
        .update_user(authed(
            pb::UpdateUserRequest {
                password: Some("short".into()),
                ..Default::default()
            },
            token,
        ))
        .await;
    assert_eq!(
        violations(&assert_code(bad, Code::InvalidArgument))[0].0,
        "password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_every_other_session() {
    let h = Harness::start().await;
    let gina = h.register("gina").await;
    let other = h.login(&gina).await.tokens.unwrap();
    let mut client = h.client();

    client
        .update_user(authed(
            pb::UpdateUserRequest {
                password: Some("a brand new password".into()),
                ..Default::default()
            },
            &gina.tokens.access_token,
        ))
        .await
        .unwrap();

    let current = client
        .get_current_user(authed(
            pb::GetCurrentUserRequest {},
            &gina.tokens.access_token,
        ))
        .await;
    assert!(
        current.is_ok(),
        "the session that changed the password stays"
    );
    assert_code(
        client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, &other.access_token))
            .await,
        Code::Unauthenticated,
    );
    assert!(cached_as_ended(&h, &other.session_id).await);
    assert_code(
        client
            .refresh(pb::RefreshRequest {
                refresh_token: other.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );
    let relogin = client
        .login(pb::LoginRequest {
            email: gina.user.email,
            password: "a brand new password".into(),
            client: None,
        })
        .await;
    assert!(relogin.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let h = Harness::start().await;
    let hank = h.register("hank").await;
    let mut client = h.client();

    let first = client
        .refresh(pb::RefreshRequest {
            refresh_token: hank.tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(first.refresh_token, hank.tokens.refresh_token);
    assert_eq!(
        first.session_id, hank.tokens.session_id,
        "rotation keeps the session"
    );
    let second = client
        .refresh(pb::RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();

    // Someone replays the first, already rotated token: the session dies.
    assert_code(
        client
            .refresh(pb::RefreshRequest {
                refresh_token: hank.tokens.refresh_token.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        client
            .refresh(pb::RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, &second.access_token))
            .await,
        Code::Unauthenticated,
    );
    assert!(cached_as_ended(&h, &hank.tokens.session_id).await);
    assert_code(
        client
            .refresh(pb::RefreshRequest {
                refresh_token: "made-up".into(),
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_can_be_listed_revoked_and_logged_out() {
    let h = Harness::start().await;
    let ivy = h.register("ivy").await;
    let second = h.login(&ivy).await.tokens.unwrap();
    let third = h.login(&ivy).await.tokens.unwrap();
    let mut client = h.client();
    let token = &ivy.tokens.access_token;

    let sessions = client
        .list_sessions(authed(pb::ListSessionsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    assert_eq!(
        sessions.iter().find(|s| s.current).unwrap().id,
        ivy.tokens.session_id
    );

    client
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: second.session_id.clone(),
            },
            token,
        ))
        .await
        .unwrap();
    assert_code(
        client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, &second.access_token))
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        client
            .revoke_session(authed(
                pb::RevokeSessionRequest {
                    session_id: second.session_id,
                },
                token,
            ))
            .await,
        Code::NotFound,
    );

    client
        .logout(authed(pb::LogoutRequest {}, &third.access_token))
        .await
        .unwrap();
    assert_code(
        client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, &third.access_token))
            .await,
        Code::Unauthenticated,
    );

    h.login(&ivy).await;
    let all = client
        .logout_all(authed(pb::LogoutAllRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.revoked_sessions, 2,
        "the current one and the fresh login"
    );
    assert_code(
        client
            .get_current_user(authed(pb::GetCurrentUserRequest {}, token))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_lookups_by_username_and_batched_ids() {
    let h = Harness::start().await;
    let jack = h.register("jack").await;
    let kim = h.register("kim").await;
    let mut client = h.client();

    let profile = client
        .get_user_by_username(pb::GetUserByUsernameRequest {
            username: "JACK".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (profile.id.as_str(), profile.username.as_str()),
        (jack.user.id.as_str(), "jack")
    );
    assert_code(
        client
            .get_user_by_username(pb::GetUserByUsernameRequest {
                username: "nobody".into(),
            })
            .await,
        Code::NotFound,
    );

    let batch = h
        .auth
        .client_as(Service::Content)
        .get_users_by_ids(pb::GetUsersByIdsRequest {
            ids: vec![
                jack.user.id.clone(),
                kim.user.id.clone(),
                "not-a-uuid".into(),
                uuid::Uuid::new_v4().to_string(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = batch.users.into_iter().map(|u| u.username).collect();
    names.sort();
    assert_eq!(names, vec!["jack", "kim"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_users() {
    let h = Harness::start().await;
    let creator = h.register("leo").await;
    let admin = h.admin("root_mia").await;
    let mut client = h.client();

    assert_code(
        client
            .list_users(authed(
                pb::ListUsersRequest::default(),
                &creator.tokens.access_token,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        client
            .ban_user(authed(
                pb::BanUserRequest {
                    username: "root_mia".into(),
                },
                &creator.tokens.access_token,
            ))
            .await,
        Code::PermissionDenied,
    );

    let page = client
        .list_users(authed(
            pb::ListUsersRequest {
                query: "LEO".into(),
                limit: 10,
                offset: 0,
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.total, page.users[0].username.as_str()), (1, "leo"));
    let all = client
        .list_users(authed(
            pb::ListUsersRequest {
                query: String::new(),
                limit: 1,
                offset: 1,
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.total, all.users.len()), (2, 1));
    let wildcard = client
        .list_users(authed(
            pb::ListUsersRequest {
                query: "%".into(),
                limit: 10,
                offset: 0,
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        wildcard.total, 0,
        "LIKE wildcards in the query are literals"
    );

    let viewer = client
        .set_user_role(authed(
            pb::SetUserRoleRequest {
                username: "leo".into(),
                role: pb::Role::Viewer.into(),
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(viewer.role(), pb::Role::Viewer);
    assert_code(
        client
            .set_user_role(authed(
                pb::SetUserRoleRequest {
                    username: "leo".into(),
                    role: 42,
                },
                &admin.tokens.access_token,
            ))
            .await,
        Code::InvalidArgument,
    );
    let relogin = h.login(&creator).await;
    assert_eq!(relogin.user.unwrap().role(), pb::Role::Viewer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_ends_all_sessions_and_blocks_login_until_lifted() {
    let h = Harness::start().await;
    let nick = h.register("nick").await;
    let admin = h.admin("root_ola").await;
    let mut client = h.client();

    let banned = client
        .ban_user(authed(
            pb::BanUserRequest {
                username: "nick".into(),
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(banned.banned);
    assert!(cached_as_ended(&h, &nick.tokens.session_id).await);
    assert_code(
        client
            .get_current_user(authed(
                pb::GetCurrentUserRequest {},
                &nick.tokens.access_token,
            ))
            .await,
        Code::Unauthenticated,
    );
    assert_code(
        client
            .login(pb::LoginRequest {
                email: nick.user.email.clone(),
                password: nick.password.clone(),
                client: None,
            })
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        client
            .refresh(pb::RefreshRequest {
                refresh_token: nick.tokens.refresh_token.clone(),
            })
            .await,
        Code::Unauthenticated,
    );

    let unbanned = client
        .unban_user(authed(
            pb::UnbanUserRequest {
                username: "nick".into(),
            },
            &admin.tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!unbanned.banned);
    assert!(
        h.client()
            .login(pb::LoginRequest {
                email: nick.user.email,
                password: nick.password,
                client: None
            })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_lifetime_is_configurable() {
    let h = Harness::start_with(|c| c.access_token_ttl = std::time::Duration::from_secs(120)).await;
    let pia = h.register("pia").await;
    let claims = claims_of(&pia.tokens.access_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
}

/// Whether the session cache says the session has ended (written before the
/// change committed, so every process refuses it at once).
async fn cached_as_ended(h: &Harness, session: &str) -> bool {
    let mut redis = redis::Client::open(h.auth.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg(format!("{}session:{session}", h.auth.redis.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    value.as_deref() == Some("ended")
}
