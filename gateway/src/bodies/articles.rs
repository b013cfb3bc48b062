//! RealWorld's profiles, articles, comments and tags.

use quill_proto::content::v1 as pb;
use serde::Serialize;

use super::{incomplete, timestamp};
use crate::error::ApiError;

/// `bio` and `image` are `null` when unset; the user's id stays internal.
#[derive(Serialize)]
pub struct Profile {
    bio: Option<String>,
    following: bool,
    #[serde(serialize_with = "crate::avatar::serialize")]
    image: Option<String>,
    username: String,
}

impl From<pb::Profile> for Profile {
    fn from(profile: pb::Profile) -> Self {
        Self {
            bio: profile.bio,
            following: profile.following,
            image: profile.image,
            username: profile.username,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    author: Profile,
    body: String,
    created_at: String,
    description: String,
    favorited: bool,
    favorites_count: u64,
    slug: String,
    tag_list: Vec<String>,
    title: String,
    updated_at: String,
}

impl TryFrom<pb::Article> for Article {
    type Error = ApiError;

    fn try_from(article: pb::Article) -> Result<Self, ApiError> {
        let author = article
            .author
            .ok_or_else(|| incomplete("article without author"))?;
        // Clients (and the Postman suite) rely on the order; the REST contract
        // is pinned here whatever the service returns.
        let mut tags = article.tags;
        tags.sort();
        Ok(Self {
            author: author.into(),
            body: article.body,
            created_at: timestamp(article.created_at.as_ref()),
            description: article.description,
            favorited: article.favorited,
            favorites_count: article.favorites_count,
            slug: article.slug,
            tag_list: tags,
            title: article.title,
            updated_at: timestamp(article.updated_at.as_ref()),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    author: Profile,
    body: String,
    created_at: String,
    id: i64,
    updated_at: String,
}

impl TryFrom<pb::Comment> for Comment {
    type Error = ApiError;

    fn try_from(comment: pb::Comment) -> Result<Self, ApiError> {
        let author = comment
            .author
            .ok_or_else(|| incomplete("comment without author"))?;
        Ok(Self {
            author: author.into(),
            body: comment.body,
            created_at: timestamp(comment.created_at.as_ref()),
            id: comment.id,
            updated_at: timestamp(comment.updated_at.as_ref()),
        })
    }
}

/// `{"profile": ...}`
#[derive(Serialize)]
pub struct ProfileBody {
    profile: Profile,
}

impl From<pb::Profile> for ProfileBody {
    fn from(profile: pb::Profile) -> Self {
        Self {
            profile: profile.into(),
        }
    }
}

/// `{"article": ...}`
#[derive(Serialize)]
pub struct ArticleBody {
    article: Article,
}

impl TryFrom<pb::Article> for ArticleBody {
    type Error = ApiError;

    fn try_from(article: pb::Article) -> Result<Self, ApiError> {
        Ok(Self {
            article: article.try_into()?,
        })
    }
}

/// RealWorld's `{"articles", "articlesCount"}`, plus our `nextCursor` only
/// when there is a next page to fetch by cursor.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArticlesBody {
    articles: Vec<Article>,
    articles_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl TryFrom<pb::ListArticlesResponse> for ArticlesBody {
    type Error = ApiError;

    fn try_from(page: pb::ListArticlesResponse) -> Result<Self, ApiError> {
        Ok(Self {
            articles: page
                .articles
                .into_iter()
                .map(Article::try_from)
                .collect::<Result<_, _>>()?,
            articles_count: page.articles_count,
            next_cursor: page.next_cursor,
        })
    }
}

/// `{"comment": ...}`
#[derive(Serialize)]
pub struct CommentBody {
    comment: Comment,
}

impl TryFrom<pb::Comment> for CommentBody {
    type Error = ApiError;

    fn try_from(comment: pb::Comment) -> Result<Self, ApiError> {
        Ok(Self {
            comment: comment.try_into()?,
        })
    }
}

/// RealWorld's `{"comments": [...]}`, plus our `nextCursor` only when more
/// comments follow.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentsBody {
    comments: Vec<Comment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl TryFrom<pb::ListCommentsResponse> for CommentsBody {
    type Error = ApiError;

    fn try_from(list: pb::ListCommentsResponse) -> Result<Self, ApiError> {
        Ok(Self {
            comments: list
                .comments
                .into_iter()
                .map(Comment::try_from)
                .collect::<Result<_, _>>()?,
            next_cursor: list.next_cursor,
        })
    }
}

/// `{"tags": [...]}`
#[derive(Serialize)]
pub struct TagsBody {
    tags: Vec<String>,
}

impl From<pb::ListTagsResponse> for TagsBody {
    fn from(list: pb::ListTagsResponse) -> Self {
        Self { tags: list.tags }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bodies::testing::{assert_sent_as, at};

    fn author() -> pb::Profile {
        pb::Profile {
            id: "0190a5e0-0000-7000-8000-000000000001".into(),
            username: "jake".into(),
            bio: None,
            image: Some("https://example.com/jake.png".into()),
            following: true,
        }
    }

    fn author_json() -> serde_json::Value {
        json!({
            "username": "jake",
            "bio": null,
            "image": "https://example.com/jake.png",
            "following": true,
        })
    }

    fn dragons() -> pb::Article {
        pb::Article {
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
        }
    }

    fn dragons_json() -> serde_json::Value {
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
            "author": author_json(),
        })
    }

    fn thanks() -> pb::Comment {
        pb::Comment {
            id: 42,
            body: "Thank you so much!".into(),
            created_at: at(1_767_323_045, 678_000_000),
            updated_at: at(1_767_323_045, 678_000_000),
            author: Some(author()),
            article_slug: "how-to-train-your-dragon".into(),
        }
    }

    #[test]
    fn a_profile_has_null_for_unset_fields_and_no_id() {
        assert_sent_as(
            &ProfileBody::from(author()),
            &json!({ "profile": author_json() }),
        );
    }

    #[test]
    fn an_article_has_realworld_fields_sorted_tags_and_millisecond_times() {
        assert_sent_as(
            &ArticleBody::try_from(dragons()).unwrap(),
            &json!({ "article": dragons_json() }),
        );
    }

    #[test]
    fn a_comment_has_a_numeric_id() {
        assert_sent_as(
            &CommentBody::try_from(thanks()).unwrap(),
            &json!({ "comment": {
                "id": 42,
                "createdAt": "2026-01-02T03:04:05.678Z",
                "updatedAt": "2026-01-02T03:04:05.678Z",
                "body": "Thank you so much!",
                "author": author_json(),
            }}),
        );
    }

    #[test]
    fn a_missing_author_is_a_server_error_not_a_null() {
        let Err(error) = Article::try_from(pb::Article::default()) else {
            panic!("an article without author converted");
        };
        assert_eq!(error.status().as_u16(), 500);
        let Err(error) = Comment::try_from(pb::Comment::default()) else {
            panic!("a comment without author converted");
        };
        assert_eq!(error.status().as_u16(), 500);
    }

    #[test]
    fn next_cursor_appears_only_when_there_is_one() {
        let last = ArticlesBody::try_from(pb::ListArticlesResponse {
            articles: vec![dragons()],
            articles_count: 1,
            next_cursor: None,
        })
        .unwrap();
        assert_sent_as(
            &last,
            &json!({ "articles": [dragons_json()], "articlesCount": 1 }),
        );
        let more = ArticlesBody::try_from(pb::ListArticlesResponse {
            articles: vec![],
            articles_count: 40,
            next_cursor: Some("next".into()),
        })
        .unwrap();
        assert_sent_as(
            &more,
            &json!({ "articles": [], "articlesCount": 40, "nextCursor": "next" }),
        );

        let last = CommentsBody::try_from(pb::ListCommentsResponse {
            comments: vec![],
            next_cursor: None,
        })
        .unwrap();
        assert_sent_as(&last, &json!({ "comments": [] }));
        let more = CommentsBody::try_from(pb::ListCommentsResponse {
            comments: vec![],
            next_cursor: Some("next".into()),
        })
        .unwrap();
        assert_sent_as(&more, &json!({ "comments": [], "nextCursor": "next" }));
    }

    #[test]
    fn tags_are_a_list_of_names() {
        let tags = TagsBody::from(pb::ListTagsResponse {
            tags: vec!["dragons".into(), "training".into()],
        });
        assert_sent_as(&tags, &json!({ "tags": ["dragons", "training"] }));
    }
}
