//! The gRPC face of content: take the caller the authentication layer
//! established (`quill_platform::authn`), translate messages, and delegate to
//! `Content`.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use quill_platform::{
    authn,
    rate_limit::{Limit, RateLimiter},
    service_identity::Service,
    time::{from_proto, to_proto},
};
use quill_proto::content::v1::{self as pb, content_service_server::ContentService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    articles::{ArticleUpdateInput, ListQuery, NewArticleInput, Page},
    comments::CommentQuery,
    error::ContentError,
    policy::Caller,
    profiles::{ProfileView, follower_batch_size},
    repo::{articles::ArticleRow, comments::CommentRow},
    service::Content,
};

pub struct ContentGrpc {
    content: Arc<Content>,
    writes: WriteLimit,
}

/// Each user's budget of writes (articles, comments, favorites, follows),
/// so one account cannot flood the pages others read.
pub struct WriteLimit {
    pub limiter: RateLimiter,
    pub limit: Limit,
}

impl ContentGrpc {
    pub fn new(content: Content, writes: WriteLimit) -> Self {
        Self {
            content: Arc::new(content),
            writes,
        }
    }

    /// The acting user, counted against their write budget.
    async fn writer<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = authn::caller(request)?;
        self.writes
            .limiter
            .hit("writes:user", &caller.user.to_string(), self.writes.limit)
            .await?;
        Ok(caller)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn parse_user_id(id: &str) -> Result<Uuid, ContentError> {
    id.trim()
        .parse()
        .map_err(|_| ContentError::invalid("user_id", "is not a valid id"))
}

#[tonic::async_trait]
impl ContentService for ContentGrpc {
    async fn create_article(
        &self,
        request: Request<pb::CreateArticleRequest>,
    ) -> Reply<pb::Article> {
        let caller = self.writer(&request).await?;
        let r = request.into_inner();
        let input = NewArticleInput {
            title: r.title,
            description: r.description,
            body: r.body,
            tags: r.tags,
        };
        let article = self.content.create_article(&caller, input).await?;
        Ok(Response::new(article_message(article)))
    }

    async fn get_article(&self, request: Request<pb::GetArticleRequest>) -> Reply<pb::Article> {
        let viewer = authn::maybe_caller(&request)?;
        let article = self
            .content
            .article(viewer.map(|c| c.user), &request.get_ref().slug)
            .await?;
        Ok(Response::new(article_message(article)))
    }

    async fn update_article(
        &self,
        request: Request<pb::UpdateArticleRequest>,
    ) -> Reply<pb::Article> {
        let caller = self.writer(&request).await?;
        let r = request.into_inner();
        let input = ArticleUpdateInput {
            title: r.title,
            description: r.description,
            body: r.body,
            tags: r.replace_tags.then_some(r.tags),
        };
        let article = self.content.update_article(&caller, &r.slug, input).await?;
        Ok(Response::new(article_message(article)))
    }

    async fn delete_article(
        &self,
        request: Request<pb::DeleteArticleRequest>,
    ) -> Reply<pb::DeleteArticleResponse> {
        let caller = self.writer(&request).await?;
        self.content
            .delete_article(&caller, &request.get_ref().slug)
            .await?;
        Ok(Response::new(pb::DeleteArticleResponse {}))
    }

    async fn list_articles(
        &self,
        request: Request<pb::ListArticlesRequest>,
    ) -> Reply<pb::ListArticlesResponse> {
        let viewer = authn::maybe_caller(&request)?;
        let r = request.into_inner();
        let query = ListQuery {
            tag: r.tag,
            author: r.author,
            favorited_by: r.favorited_by,
            query: r.query,
            limit: r.limit,
            offset: r.offset,
            cursor: r.cursor,
        };
        let page = self.content.list_articles(viewer.as_ref(), query).await?;
        Ok(Response::new(page_message(page)))
    }

    async fn feed(&self, request: Request<pb::FeedRequest>) -> Reply<pb::ListArticlesResponse> {
        let caller = authn::caller(&request)?;
        let r = request.into_inner();
        let page = self
            .content
            .feed(&caller, r.limit, r.offset, r.cursor.as_deref())
            .await?;
        Ok(Response::new(page_message(page)))
    }

    async fn favorite_article(
        &self,
        request: Request<pb::FavoriteArticleRequest>,
    ) -> Reply<pb::Article> {
        let caller = self.writer(&request).await?;
        let article = self
            .content
            .favorite(&caller, &request.get_ref().slug, true)
            .await?;
        Ok(Response::new(article_message(article)))
    }

    async fn unfavorite_article(
        &self,
        request: Request<pb::UnfavoriteArticleRequest>,
    ) -> Reply<pb::Article> {
        let caller = self.writer(&request).await?;
        let article = self
            .content
            .favorite(&caller, &request.get_ref().slug, false)
            .await?;
        Ok(Response::new(article_message(article)))
    }

    async fn add_comment(&self, request: Request<pb::AddCommentRequest>) -> Reply<pb::Comment> {
        let caller = self.writer(&request).await?;
        let r = request.into_inner();
        let (comment, slug) = self.content.add_comment(&caller, &r.slug, &r.body).await?;
        Ok(Response::new(comment_message(comment, &slug)))
    }

    async fn list_comments(
        &self,
        request: Request<pb::ListCommentsRequest>,
    ) -> Reply<pb::ListCommentsResponse> {
        let viewer = authn::maybe_caller(&request)?;
        let r = request.into_inner();
        let query = CommentQuery {
            limit: r.limit,
            offset: r.offset,
            cursor: r.cursor,
        };
        let list = self
            .content
            .comments(viewer.map(|c| c.user), &r.slug, query)
            .await?;
        Ok(Response::new(pb::ListCommentsResponse {
            comments: list
                .comments
                .into_iter()
                .map(|c| comment_message(c, &r.slug))
                .collect(),
            next_cursor: list.next_cursor,
        }))
    }

    async fn delete_comment(
        &self,
        request: Request<pb::DeleteCommentRequest>,
    ) -> Reply<pb::DeleteCommentResponse> {
        let caller = self.writer(&request).await?;
        let r = request.get_ref();
        self.content.delete_comment(&caller, &r.slug, r.id).await?;
        Ok(Response::new(pb::DeleteCommentResponse {}))
    }

    async fn list_tags(
        &self,
        request: Request<pb::ListTagsRequest>,
    ) -> Reply<pb::ListTagsResponse> {
        let tags = self.content.tags(request.get_ref().limit).await?;
        Ok(Response::new(pb::ListTagsResponse { tags }))
    }

    async fn get_profile(&self, request: Request<pb::GetProfileRequest>) -> Reply<pb::Profile> {
        let viewer = authn::maybe_caller(&request)?;
        let profile = self
            .content
            .profile(viewer.as_ref(), &request.get_ref().username)
            .await?;
        Ok(Response::new(profile_message(profile)))
    }

    async fn follow(&self, request: Request<pb::FollowRequest>) -> Reply<pb::Profile> {
        let caller = self.writer(&request).await?;
        let profile = self
            .content
            .follow(&caller, &request.get_ref().username, true)
            .await?;
        Ok(Response::new(profile_message(profile)))
    }

    async fn unfollow(&self, request: Request<pb::UnfollowRequest>) -> Reply<pb::Profile> {
        let caller = self.writer(&request).await?;
        let profile = self
            .content
            .follow(&caller, &request.get_ref().username, false)
            .await?;
        Ok(Response::new(profile_message(profile)))
    }

    /// Not a write against the caller's budget: it changes nothing they
    /// could flood others with, and it follows a write auth has limited.
    async fn refresh_author(
        &self,
        request: Request<pb::RefreshAuthorRequest>,
    ) -> Reply<pb::RefreshAuthorResponse> {
        let caller = authn::caller(&request)?;
        let user = parse_user_id(&request.get_ref().user_id)?;
        self.content.refresh_author(&caller, user).await?;
        Ok(Response::new(pb::RefreshAuthorResponse {}))
    }

    type StreamFollowerIdsStream =
        Pin<Box<dyn Stream<Item = Result<pb::FollowerIdBatch, Status>> + Send + 'static>>;

    /// An internal fan-out RPC (notification calls it without a user token):
    /// keyset pages of follower ids, one SQL statement per batch.
    async fn stream_follower_ids(
        &self,
        request: Request<pb::StreamFollowerIdsRequest>,
    ) -> Reply<Self::StreamFollowerIdsStream> {
        authn::require_service(&request, &[Service::Notification])?;
        let r = request.into_inner();
        let user_id = parse_user_id(&r.user_id)?;
        let size = follower_batch_size(r.batch_size);
        let as_of = r
            .as_of
            .as_ref()
            .map(|at| {
                from_proto(at).ok_or_else(|| ContentError::invalid("as_of", "is not a valid time"))
            })
            .transpose()?;
        let content = Arc::clone(&self.content);
        // State: the last id sent, or `None` once the last batch went out.
        let batches =
            futures::stream::try_unfold(Some(None), move |after: Option<Option<Uuid>>| {
                let content = Arc::clone(&content);
                async move {
                    let Some(after) = after else {
                        return Ok(None);
                    };
                    let ids = content
                        .follower_batch(user_id, after, size, as_of)
                        .await
                        .map_err(Status::from)?;
                    if ids.is_empty() {
                        return Ok(None);
                    }
                    let full = ids.len() >= usize::try_from(size).unwrap_or(usize::MAX);
                    let next = full.then(|| ids.last().copied());
                    let batch = pb::FollowerIdBatch {
                        user_ids: ids.iter().map(Uuid::to_string).collect(),
                    };
                    Ok(Some((batch, next)))
                }
            });
        Ok(Response::new(Box::pin(batches)))
    }
}

fn profile_fields(
    id: Uuid,
    username: Option<String>,
    bio: Option<String>,
    image: Option<String>,
    following: bool,
) -> pb::Profile {
    pb::Profile {
        id: id.to_string(),
        // Only an author auth no longer knows has no username.
        username: username.unwrap_or_default(),
        bio,
        image,
        following,
    }
}

fn profile_message(view: ProfileView) -> pb::Profile {
    profile_fields(
        view.author.id,
        Some(view.author.username),
        view.author.bio,
        view.author.image,
        view.following,
    )
}

fn article_message(row: ArticleRow) -> pb::Article {
    pb::Article {
        id: row.id.to_string(),
        slug: row.slug,
        title: row.title,
        description: row.description,
        body: row.body,
        tags: row.tags,
        created_at: Some(to_proto(row.created_at)),
        updated_at: Some(to_proto(row.updated_at)),
        favorited: row.favorited,
        favorites_count: u64::try_from(row.favorites_count).unwrap_or(0),
        author: Some(profile_fields(
            row.author_id,
            row.author_username,
            row.author_bio,
            row.author_image,
            row.following,
        )),
    }
}

fn page_message(page: Page) -> pb::ListArticlesResponse {
    pb::ListArticlesResponse {
        articles: page.articles.into_iter().map(article_message).collect(),
        articles_count: page.total,
        next_cursor: page.next_cursor,
    }
}

fn comment_message(row: CommentRow, slug: &str) -> pb::Comment {
    pb::Comment {
        id: row.id,
        body: row.body,
        created_at: Some(to_proto(row.created_at)),
        updated_at: Some(to_proto(row.updated_at)),
        author: Some(profile_fields(
            row.author_id,
            row.author_username,
            row.author_bio,
            row.author_image,
            row.following,
        )),
        article_slug: slug.to_owned(),
    }
}
