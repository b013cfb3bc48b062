//! Every error names a stable reason (`google.rpc.ErrorInfo`, domain
//! `quill`), so a grpcurl user or another service branches on it rather
//! than on message text; the other details stay beside it.

use crate::support;

use std::collections::HashMap;

use quill_proto::content::v1 as pb;
use support::{World, as_user, assert_code, with_token};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

fn reason(status: &Status) -> (String, HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "quill");
    (info.reason, info.metadata)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_error_names_its_reason() {
    let world = World::start().await;
    let alice = world.user("alice").await;
    let viewer = world.user_with_role("vera", "viewer").await;
    let bob = world.user("bob").await;
    let article = world.article_by(&alice, "Mine", &[]).await;
    let mut client = world.client();

    let missing = assert_code(world.get(None, "no-such-article").await, Code::NotFound);
    let (why, metadata) = reason(&missing);
    assert_eq!(
        (why.as_str(), metadata["resource"].as_str()),
        ("NOT_FOUND", "article")
    );

    let blank = pb::CreateArticleRequest {
        title: " ".into(),
        description: "d".into(),
        body: "b".into(),
        tags: vec![],
    };
    let invalid = assert_code(
        client.create_article(as_user(&alice, blank.clone())).await,
        Code::InvalidArgument,
    );
    assert_eq!(reason(&invalid).0, "INVALID_FIELDS");
    assert!(
        invalid.get_details_bad_request().is_some(),
        "field violations stay"
    );

    let anonymous = assert_code(
        client.create_article(Request::new(blank.clone())).await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&anonymous).0, "TOKEN_MISSING");
    let forged = assert_code(
        client
            .create_article(with_token("not-a-jwt", blank.clone()))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&forged).0, "TOKEN_INVALID");

    let role = assert_code(
        client
            .create_article(as_user(
                &viewer,
                pb::CreateArticleRequest {
                    title: "Viewers only read".into(),
                    ..blank.clone()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    let (why, metadata) = reason(&role);
    assert_eq!(
        (why.as_str(), metadata["permission"].as_str()),
        ("PERMISSION_DENIED", "article:create")
    );
    let not_theirs = assert_code(
        client
            .delete_article(as_user(
                &bob,
                pb::DeleteArticleRequest {
                    slug: article.slug.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&not_theirs).0, "PERMISSION_DENIED");

    let internal_call = assert_code(
        client
            .stream_follower_ids(as_user(
                &alice,
                pb::StreamFollowerIdsRequest {
                    user_id: alice.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Code::PermissionDenied,
    );
    assert_eq!(reason(&internal_call).0, "SERVICE_NOT_ALLOWED");
}

/// A client that gives up on a call resets its stream, and a call reset
/// before its request message arrived reaches the server as an empty body
/// (hyper reads CANCEL as its end). That is the client's doing: CANCELLED,
/// not INTERNAL, which would log `response failed` at ERROR.
#[tokio::test]
async fn a_call_whose_request_message_never_came_is_cancelled_not_internal() {
    let world = World::start().await;
    let addr = world.content.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{addr}/quill.content.v1.ContentService/ListTags"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("a request");

    let (answer, _) = client.send_request(request, true).expect("sent");

    let answer = answer.await.expect("an answer");
    let status = answer.headers().get("grpc-status").expect("trailers-only");
    assert_eq!(status, "1", "{:?}", answer.headers());
}
