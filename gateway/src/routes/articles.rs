//! Articles, the feed and favorites: RealWorld's `/articles`, plus our
//! extensions `q` (full-text search) and `cursor` (keyset pagination).

use axum::{
    Json,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use quill_proto::content::v1 as pb;
use serde::{Deserialize, de::IgnoredAny};

use crate::{
    bodies::articles::{ArticleBody, ArticlesBody},
    calls::Calls,
    conditional::IfNoneMatch,
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    route_table::{RouteTable, get, post},
    versions::Tag,
};

pub fn routes() -> RouteTable {
    RouteTable::default()
        .route("/api/articles", get(list_articles).post(create_article))
        .route("/api/articles/feed", get(feed))
        .route(
            "/api/articles/{slug}",
            get(get_article).put(update_article).delete(delete_article),
        )
        .route(
            "/api/articles/{slug}/favorite",
            post(favorite).delete(unfavorite),
        )
}

// Query strings: unknown parameters are ignored rather than refused, since
// public front ends add their own (cache busters, UI state). An empty value
// (`?tag=`, as an empty form field sends) means the parameter is absent.
// Numbers arrive as text so that a bad one gets a 422 naming its field.

#[derive(Deserialize)]
struct ListQuery {
    tag: Option<String>,
    author: Option<String>,
    favorited: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    cursor: Option<String>,
}

/// The paging parameters alone (the feed, an article's comments).
#[derive(Deserialize)]
pub(super) struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
    cursor: Option<String>,
}

/// Which page of a list to return. `limit` 0 leaves the page size to the
/// content service's default.
#[derive(Debug, PartialEq)]
pub(super) struct Page {
    pub(super) limit: u32,
    pub(super) offset: u32,
    pub(super) cursor: Option<String>,
}

impl Page {
    pub(super) fn from_query(query: PageQuery) -> Result<Self, ApiError> {
        Self::parse(query.limit, query.offset, query.cursor)
    }

    fn parse(
        limit: Option<String>,
        offset: Option<String>,
        cursor: Option<String>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            limit: count("limit", limit)?,
            offset: count("offset", offset)?,
            cursor: present(cursor),
        })
    }
}

fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub(super) fn count(field: &str, value: Option<String>) -> Result<u32, ApiError> {
    match present(value) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::validation(field, "must be a non-negative integer")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    article: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewArticle {
    title: String,
    description: String,
    body: String,
    tag_list: Option<Vec<String>>,
}

/// Front ends (Angular's, for one) post back the whole article they were
/// given, so fields we hand out are accepted and ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArticleChanges {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
    /// Present (even empty) replaces the tags; absent or `null` keeps them.
    tag_list: Option<Vec<String>>,
    #[serde(rename = "slug")]
    _slug: Option<IgnoredAny>,
    #[serde(rename = "createdAt")]
    _created_at: Option<IgnoredAny>,
    #[serde(rename = "updatedAt")]
    _updated_at: Option<IgnoredAny>,
    #[serde(rename = "favorited")]
    _favorited: Option<IgnoredAny>,
    #[serde(rename = "favoritesCount")]
    _favorites_count: Option<IgnoredAny>,
    #[serde(rename = "author")]
    _author: Option<IgnoredAny>,
}

fn list_request(query: ListQuery) -> Result<pb::ListArticlesRequest, ApiError> {
    let page = Page::parse(query.limit, query.offset, query.cursor)?;
    Ok(pb::ListArticlesRequest {
        tag: present(query.tag),
        author: present(query.author),
        favorited_by: present(query.favorited),
        query: present(query.q),
        limit: page.limit,
        offset: page.offset,
        cursor: page.cursor,
    })
}

async fn list_articles(
    calls: Calls,
    user: Option<AuthUser>,
    if_none_match: IfNoneMatch,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let request = list_request(query)?;
    let page = calls
        .content(user.as_ref())
        .list_articles(request)
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("articles", &page), || {
        Ok(Json(ArticlesBody::try_from(page)?))
    })
}

async fn feed(
    calls: Calls,
    user: AuthUser,
    if_none_match: IfNoneMatch,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let page = Page::from_query(query)?;
    let page = calls
        .content(Some(&user))
        .feed(pb::FeedRequest {
            limit: page.limit,
            offset: page.offset,
            cursor: page.cursor,
        })
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("feed", &page), || {
        Ok(Json(ArticlesBody::try_from(page)?))
    })
}

async fn get_article(
    calls: Calls,
    user: Option<AuthUser>,
    if_none_match: IfNoneMatch,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let found = calls
        .content(user.as_ref())
        .get_article(pb::GetArticleRequest { slug })
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("article", &found), || {
        Ok(Json(ArticleBody::try_from(found)?))
    })
}

async fn create_article(
    calls: Calls,
    user: AuthUser,
    ApiJson(body): ApiJson<Envelope<NewArticle>>,
) -> Result<impl IntoResponse, ApiError> {
    let new = body.article;
    let created = calls
        .content(Some(&user))
        .create_article(pb::CreateArticleRequest {
            title: new.title,
            description: new.description,
            body: new.body,
            tags: new.tag_list.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(ArticleBody::try_from(created)?)))
}

async fn update_article(
    calls: Calls,
    user: AuthUser,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<Envelope<ArticleChanges>>,
) -> Result<impl IntoResponse, ApiError> {
    let changes = body.article;
    let replace_tags = changes.tag_list.is_some();
    let updated = calls
        .content(Some(&user))
        .update_article(pb::UpdateArticleRequest {
            slug,
            title: changes.title,
            description: changes.description,
            body: changes.body,
            tags: changes.tag_list.unwrap_or_default(),
            replace_tags,
        })
        .await?
        .into_inner();
    Ok(Json(ArticleBody::try_from(updated)?))
}

/// The content service lets the author delete, and anyone whose role may
/// moderate articles.
async fn delete_article(
    calls: Calls,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    calls
        .content(Some(&user))
        .delete_article(pb::DeleteArticleRequest { slug })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn favorite(
    calls: Calls,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let favorited = calls
        .content(Some(&user))
        .favorite_article(pb::FavoriteArticleRequest { slug })
        .await?
        .into_inner();
    Ok(Json(ArticleBody::try_from(favorited)?))
}

async fn unfavorite(
    calls: Calls,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let unfavorited = calls
        .content(Some(&user))
        .unfavorite_article(pb::UnfavoriteArticleRequest { slug })
        .await?
        .into_inner();
    Ok(Json(ArticleBody::try_from(unfavorited)?))
}

#[cfg(test)]
mod tests {
    use axum::{extract::Query, http::Uri};
    use serde_json::{Value, json};

    use super::*;

    fn list(query: &str) -> Result<pb::ListArticlesRequest, ApiError> {
        let uri: Uri = format!("/api/articles?{query}").parse().unwrap();
        list_request(Query::<ListQuery>::try_from_uri(&uri).unwrap().0)
    }

    fn error_fields(error: ApiError) -> (u16, Value) {
        let status = error.status().as_u16();
        let response = error.into_response();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 4096));
        (status, serde_json::from_slice(&body.unwrap()).unwrap())
    }

    #[test]
    fn realworld_filters_and_our_extensions_reach_the_request() {
        let request =
            list("tag=dragons&author=jake&favorited=jane&q=train&limit=5&offset=10&cursor=abc")
                .unwrap();
        assert_eq!(
            request,
            pb::ListArticlesRequest {
                tag: Some("dragons".into()),
                author: Some("jake".into()),
                favorited_by: Some("jane".into()),
                query: Some("train".into()),
                limit: 5,
                offset: 10,
                cursor: Some("abc".into()),
            }
        );
    }

    #[test]
    fn absent_empty_and_unknown_parameters_mean_defaults() {
        let request = list("tag=&limit=&_=1700000000").unwrap();
        assert_eq!(request, pb::ListArticlesRequest::default());
    }

    #[test]
    fn negative_or_non_numeric_paging_is_a_422_naming_the_field() {
        for (query, field) in [
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("offset=-5", "offset"),
            ("offset=1.5", "offset"),
            ("limit=4294967296", "limit"),
        ] {
            let (status, body) = error_fields(list(query).unwrap_err());
            assert_eq!(status, 422, "{query}");
            assert_eq!(
                body,
                json!({ "errors": { field: ["must be a non-negative integer"] } }),
                "{query}"
            );
        }
    }

    #[test]
    fn a_new_article_needs_title_description_and_body() {
        let new: Envelope<NewArticle> = serde_json::from_value(json!({
            "article": { "title": "t", "description": "d", "body": "b" }
        }))
        .unwrap();
        assert_eq!(new.article.tag_list, None);
        for missing in ["title", "description", "body"] {
            let mut article = json!({ "title": "t", "description": "d", "body": "b" });
            article.as_object_mut().unwrap().remove(missing);
            let parsed =
                serde_json::from_value::<Envelope<NewArticle>>(json!({ "article": article }));
            assert!(parsed.is_err(), "{missing}");
        }
        assert!(serde_json::from_value::<Envelope<NewArticle>>(json!({ "title": "t" })).is_err());
    }

    #[test]
    fn an_update_accepts_the_article_it_was_given_back() {
        let changes: Envelope<ArticleChanges> = serde_json::from_value(json!({
            "article": {
                "slug": "s", "title": "New", "description": "d", "body": "b",
                "tagList": [], "createdAt": "2026-01-02T03:04:05.678Z",
                "updatedAt": "2026-01-02T03:04:05.678Z", "favorited": false,
                "favoritesCount": 0, "author": { "username": "jake" }
            }
        }))
        .unwrap();
        assert_eq!(changes.article.title.as_deref(), Some("New"));
        assert_eq!(changes.article.tag_list, Some(vec![]));
        assert!(
            serde_json::from_value::<Envelope<ArticleChanges>>(json!({
                "article": { "titel": "typo" }
            }))
            .is_err()
        );
    }
}
