//! No one can make a list unreadable for everyone else: pages are bounded
//! in bytes as well as rows, so the largest content the API accepts still
//! lists; and an upstream answer too large for the gRPC message limit is a
//! generic server error, not tonic's internal text.

use crate::support;

use quill_content::validation::{
    MAX_BODY_BYTES, MAX_COMMENT_CHARS, MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, MAX_TAGS,
    MAX_TITLE_CHARS,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Response, TestGateway};

/// The widest character UTF-8 has: four bytes each.
const WIDE: &str = "😀";

/// A short description of a response whose body may be megabytes long.
fn summary(response: &Response) -> String {
    format!("{} {}", response.status, response.body["errors"])
}

fn slug(article: &Value) -> String {
    article["slug"].as_str().expect("slug").to_owned()
}

#[tokio::test]
async fn maximal_comments_leave_an_article_s_comments_readable() {
    let gw = TestGateway::start().await;
    let author = gw.register("author").await;
    let troll = gw.register("troll").await;
    let reader = gw.register("reader").await;
    let article = gw.article(&author, "A quiet article", &[]).await;
    let path = format!("/api/articles/{}/comments", slug(&article));

    let maximal = WIDE.repeat(MAX_COMMENT_CHARS);
    for _ in 0..55 {
        gw.comment(&troll, &slug(&article), &maximal).await;
    }

    for token in [Some(reader.token.as_str()), None] {
        let list = gw.get(&path, token).await;
        assert_eq!(list.status, StatusCode::OK, "{}", summary(&list));
        let comments = list.body["comments"].as_array().expect("comments");
        assert_eq!(comments.len(), 55);
        assert_eq!(comments[0]["body"], maximal.as_str());
    }
}

#[tokio::test]
async fn maximal_articles_leave_the_article_list_readable() {
    let gw = TestGateway::start().await;
    let troll = gw.register("troll").await;
    let reader = gw.register("reader").await;
    let tags: Vec<String> = (0..MAX_TAGS)
        .map(|i| format!("{i:02}{}", WIDE.repeat(MAX_TAG_CHARS - 2)))
        .collect();
    let maximal = json!({"article": {
        "title": WIDE.repeat(MAX_TITLE_CHARS),
        "description": WIDE.repeat(MAX_DESCRIPTION_CHARS),
        "body": WIDE.repeat(MAX_BODY_BYTES / WIDE.len()),
        "tagList": tags,
    }});
    for _ in 0..12 {
        let created = gw
            .post("/api/articles", Some(&troll.token), maximal.clone())
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", summary(&created));
    }

    for path in ["/api/articles", "/api/articles?limit=100"] {
        let list = gw.get(path, Some(&reader.token)).await;
        assert_eq!(list.status, StatusCode::OK, "{path}: {}", summary(&list));
        assert_eq!(
            list.body["articles"].as_array().expect("articles").len(),
            12
        );
        assert_eq!(list.body["articlesCount"], 12);
    }
}

#[tokio::test]
async fn an_upstream_answer_over_the_message_limit_is_a_generic_bad_gateway() {
    let gw = TestGateway::start().await;
    let author = gw.register("author").await;
    let article = gw.article(&author, "Grown behind our back", &[]).await;
    // Larger than any gRPC message limit we would configure.
    gw.content
        .set_article_body_in_db(&slug(&article), &"x".repeat(40 << 20))
        .await;

    let read = gw
        .get(&format!("/api/articles/{}", slug(&article)), None)
        .await;
    assert_eq!(read.status, StatusCode::BAD_GATEWAY, "{}", summary(&read));
    assert_eq!(read.body, json!({"errors": {"body": ["bad gateway"]}}));
}
