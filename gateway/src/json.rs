//! RealWorld's JSON shapes shared by several resources.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;
use quill_proto::content::v1 as pb;
use serde_json::{Value, json};

use crate::error::ApiError;

/// ISO 8601 with milliseconds and `Z`, as RealWorld clients expect
/// (`2026-01-02T03:04:05.678Z`).
pub fn timestamp(ts: Option<&Timestamp>) -> String {
    ts.and_then(quill_platform::time::from_proto)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RealWorld's profile: `bio` and `image` are `null` when unset.
pub fn profile(profile: pb::Profile) -> Value {
    json!({
        "username": profile.username,
        "bio": profile.bio,
        "image": profile.image,
        "following": profile.following,
    })
}

/// RealWorld's article. Every article has an author; a response without one
/// is an upstream bug, reported as a 500 rather than as `"author": null`.
pub fn article(article: pb::Article) -> Result<Value, ApiError> {
    let author = article
        .author
        .ok_or_else(|| incomplete("article without author"))?;
    // Clients (and the Postman suite) rely on the order; the REST contract
    // is pinned here whatever the service returns.
    let mut tags = article.tags;
    tags.sort();
    Ok(json!({
        "slug": article.slug,
        "title": article.title,
        "description": article.description,
        "body": article.body,
        "tagList": tags,
        "createdAt": timestamp(article.created_at.as_ref()),
        "updatedAt": timestamp(article.updated_at.as_ref()),
        "favorited": article.favorited,
        "favoritesCount": article.favorites_count,
        "author": profile(author),
    }))
}

/// RealWorld's comment.
pub fn comment(comment: pb::Comment) -> Result<Value, ApiError> {
    let author = comment
        .author
        .ok_or_else(|| incomplete("comment without author"))?;
    Ok(json!({
        "id": comment.id,
        "createdAt": timestamp(comment.created_at.as_ref()),
        "updatedAt": timestamp(comment.updated_at.as_ref()),
        "body": comment.body,
        "author": profile(author),
    }))
}

fn incomplete(what: &str) -> ApiError {
    ApiError::from(tonic::Status::internal(format!(
        "incomplete response: {what}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author() -> pb::Profile {
        pb::Profile {
            id: "0190a5e0-0000-7000-8000-000000000001".into(),
            username: "jake".into(),
            bio: None,
            image: Some("https://example.com/jake.png".into()),
            following: true,
        }
    }

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn a_profile_has_null_for_unset_fields_and_no_id() {
        assert_eq!(
            profile(author()),
            json!({
                "username": "jake",
                "bio": null,
                "image": "https://example.com/jake.png",
                "following": true,
            })
        );
    }

    #[test]
    fn an_article_has_realworld_fields_sorted_tags_and_millisecond_times() {
        let value = article(pb::Article {
            id: "internal".into(),
            slug: "how-to-train-your-dragon".into(),
            title: "How to train your dragon".into(),
            description: "Ever wonder how?".into(),
            body: "Very carefully.".into(),
            tags: vec!["training".into(), "dragons".into()],
            created_at: at(1_767_323_045, 678_000_000),
            updated_at: at(1_767_323_046, 0),
            favorited: false,
            favorites_count: 2,
            author: Some(author()),
        })
        .unwrap();
        assert_eq!(
            value,
            json!({
                "slug": "how-to-train-your-dragon",
                "title": "How to train your dragon",
                "description": "Ever wonder how?",
                "body": "Very carefully.",
                "tagList": ["dragons", "training"],
                "createdAt": "2026-01-02T03:04:05.678Z",
                "updatedAt": "2026-01-02T03:04:06.000Z",
                "favorited": false,
                "favoritesCount": 2,
                "author": profile(author()),
            })
        );
    }

    #[test]
    fn a_comment_has_a_numeric_id() {
        let value = comment(pb::Comment {
            id: 42,
            body: "Thank you so much!".into(),
            created_at: at(1_767_323_045, 678_000_000),
            updated_at: at(1_767_323_045, 678_000_000),
            author: Some(author()),
            article_slug: "how-to-train-your-dragon".into(),
        })
        .unwrap();
        assert_eq!(
            value,
            json!({
                "id": 42,
                "createdAt": "2026-01-02T03:04:05.678Z",
                "updatedAt": "2026-01-02T03:04:05.678Z",
                "body": "Thank you so much!",
                "author": profile(author()),
            })
        );
    }

    #[test]
    fn a_missing_author_is_a_server_error_not_a_null() {
        let error = article(pb::Article::default()).unwrap_err();
        assert_eq!(error.status().as_u16(), 500);
        let error = comment(pb::Comment::default()).unwrap_err();
        assert_eq!(error.status().as_u16(), 500);
    }
}
