//! What each event means for whom: which notification, which mail. Plain
//! values in, plain values out; no SQL, no network.

use chrono::{DateTime, Utc};
use quill_proto::{
    events::v1::{ArticleSnapshot, Envelope, UserSnapshot, envelope::Payload},
    notification::v1::NotificationKind,
};
use uuid::Uuid;

/// Longest notification body kept (a comment may be long; the list shows a
/// preview and links to the article).
const BODY_PREVIEW_CHARS: usize = 280;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Welcome,
    NewFollower,
    Comment,
    Favorite,
    NewArticle,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Welcome,
        Kind::NewFollower,
        Kind::Comment,
        Kind::Favorite,
        Kind::NewArticle,
    ];

    /// The stored (and REST) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::NewFollower => "new_follower",
            Kind::Comment => "comment",
            Kind::Favorite => "favorite",
            Kind::NewArticle => "new_article",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn to_proto(self) -> NotificationKind {
        match self {
            Kind::Welcome => NotificationKind::Welcome,
            Kind::NewFollower => NotificationKind::NewFollower,
            Kind::Comment => NotificationKind::Comment,
            Kind::Favorite => NotificationKind::Favorite,
            Kind::NewArticle => NotificationKind::NewArticle,
        }
    }

    pub fn from_proto(kind: NotificationKind) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.to_proto() == kind)
    }
}

/// A notification about to be created, for one or many recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: Kind,
    pub title: String,
    pub body: String,
    pub actor_username: Option<String>,
    pub article_slug: Option<String>,
}

/// A mail about to be queued; the address comes from the recipients model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailDraft {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    /// auth's version of the user row; `None` from producers predating it.
    pub version: Option<DateTime<Utc>>,
}

/// One thing an event causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Keep the recipients read-model (username, address) current.
    UpsertRecipient(Recipient),
    /// Notify one user, and mail them too when `mail` is set (each subject
    /// to their preferences for `draft.kind`).
    Notify {
        user_id: Uuid,
        draft: Draft,
        mail: Option<MailDraft>,
    },
    /// Notify every follower of `author_id`.
    NotifyFollowers { author_id: Uuid, draft: Draft },
}

fn version(user: &UserSnapshot) -> Option<DateTime<Utc>> {
    user.updated_at
        .as_ref()
        .and_then(quill_platform::time::from_proto)
}

/// The event's payload does not make sense; retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("malformed {event} event: {reason}")]
pub struct MalformedEvent {
    event: String,
    reason: String,
}

/// The effects of `envelope`, in order. Events this service does not act on
/// have none.
pub fn plan(envelope: &Envelope) -> Result<Vec<Effect>, MalformedEvent> {
    let malformed = |reason: &str| MalformedEvent {
        event: envelope.r#type.clone(),
        reason: reason.to_owned(),
    };
    let id = |field: &str, value: &str| {
        Uuid::parse_str(value.trim()).map_err(|_| malformed(&format!("{field} is not a uuid")))
    };
    let article = |a: &Option<ArticleSnapshot>| a.clone().ok_or_else(|| malformed("no article"));
    let user = |u: &Option<UserSnapshot>| u.clone().ok_or_else(|| malformed("no user"));
    let Some(payload) = &envelope.payload else {
        return Err(malformed("no payload"));
    };
    Ok(match payload {
        Payload::UserRegistered(registered) => {
            let user = user(&registered.user)?;
            let user_id = id("user.id", &user.id)?;
            vec![
                Effect::UpsertRecipient(Recipient {
                    user_id,
                    username: user.username.clone(),
                    email: user.email.clone(),
                    version: version(&user),
                }),
                Effect::Notify {
                    user_id,
                    draft: Draft {
                        kind: Kind::Welcome,
                        title: format!("Welcome to Quill, {}!", user.username),
                        body: "Write your first article, follow authors you like, and \
                               their new articles will show up here."
                            .to_owned(),
                        actor_username: None,
                        article_slug: None,
                    },
                    mail: Some(MailDraft {
                        subject: "Welcome to Quill".to_owned(),
                        body: format!(
                            "Hello {},\n\nyour Quill account is ready. Write your first \
                             article, follow authors you like, and we will tell you when \
                             someone comments on your work.\n\nThe Quill team\n",
                            user.username
                        ),
                    }),
                },
            ]
        }
        Payload::UserUpdated(updated) => {
            let user = user(&updated.user)?;
            vec![Effect::UpsertRecipient(Recipient {
                user_id: id("user.id", &user.id)?,
                version: version(&user),
                username: user.username,
                email: user.email,
            })]
        }
        Payload::UserFollowed(followed) => vec![Effect::Notify {
            user_id: id("followee_id", &followed.followee_id)?,
            draft: Draft {
                kind: Kind::NewFollower,
                title: format!("{} followed you", followed.follower_username),
                body: format!(
                    "{} will see your new articles in their feed.",
                    followed.follower_username
                ),
                actor_username: Some(followed.follower_username.clone()),
                article_slug: None,
            },
            mail: None,
        }],
        Payload::CommentAdded(comment) => {
            let article = article(&comment.article)?;
            let author_id = id("article.author_id", &article.author_id)?;
            if author_id == id("commenter_id", &comment.commenter_id)? {
                return Ok(Vec::new());
            }
            let title = format!(
                "{} commented on \"{}\"",
                comment.commenter_username, article.title
            );
            vec![Effect::Notify {
                user_id: author_id,
                draft: Draft {
                    kind: Kind::Comment,
                    title: title.clone(),
                    body: preview(&comment.body),
                    actor_username: Some(comment.commenter_username.clone()),
                    article_slug: Some(article.slug.clone()),
                },
                mail: Some(MailDraft {
                    subject: title,
                    body: format!(
                        "Hello {},\n\n{} commented on your article \"{}\":\n\n{}\n\n\
                         Read the discussion: /article/{}\n",
                        article.author_username,
                        comment.commenter_username,
                        article.title,
                        comment.body,
                        article.slug
                    ),
                }),
            }]
        }
        Payload::ArticleFavorited(favorited) => {
            let article = article(&favorited.article)?;
            let author_id = id("article.author_id", &article.author_id)?;
            if author_id == id("user_id", &favorited.user_id)? {
                return Ok(Vec::new());
            }
            vec![Effect::Notify {
                user_id: author_id,
                draft: Draft {
                    kind: Kind::Favorite,
                    title: format!("{} favorited \"{}\"", favorited.username, article.title),
                    body: String::new(),
                    actor_username: Some(favorited.username.clone()),
                    article_slug: Some(article.slug),
                },
                mail: None,
            }]
        }
        Payload::ArticlePublished(published) => {
            let article = article(&published.article)?;
            vec![Effect::NotifyFollowers {
                author_id: id("article.author_id", &article.author_id)?,
                draft: Draft {
                    kind: Kind::NewArticle,
                    title: format!(
                        "{} published \"{}\"",
                        article.author_username, article.title
                    ),
                    body: preview(&article.description),
                    actor_username: Some(article.author_username),
                    article_slug: Some(article.slug),
                },
            }]
        }
        Payload::UserBanned(_) | Payload::ArticleUpdated(_) | Payload::ArticleDeleted(_) => {
            Vec::new()
        }
    })
}

fn preview(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use quill_events::new_envelope;
    use quill_proto::events::v1::{ArticleFavorited, CommentAdded, UserFollowed};

    use super::*;

    fn article(author: Uuid) -> ArticleSnapshot {
        ArticleSnapshot {
            id: Uuid::new_v4().to_string(),
            slug: "dragons".into(),
            title: "Dragons".into(),
            description: "About dragons".into(),
            author_id: author.to_string(),
            author_username: "jake".into(),
            tags: vec![],
        }
    }

    fn comment(author: Uuid, commenter: Uuid, body: &str) -> Envelope {
        new_envelope(
            "test",
            Payload::CommentAdded(CommentAdded {
                comment_id: 1,
                body: body.into(),
                commenter_id: commenter.to_string(),
                commenter_username: "jane".into(),
                article: Some(article(author)),
            }),
        )
    }

    #[test]
    fn a_comment_notifies_and_mails_the_author() {
        let (author, jane) = (Uuid::new_v4(), Uuid::new_v4());
        let effects = plan(&comment(author, jane, "Nice!")).unwrap();
        let [
            Effect::Notify {
                user_id,
                draft,
                mail: Some(mail),
            },
        ] = effects.as_slice()
        else {
            panic!("{effects:?}");
        };
        assert_eq!(*user_id, author);
        assert_eq!(draft.kind, Kind::Comment);
        assert_eq!(draft.body, "Nice!");
        assert_eq!(draft.actor_username.as_deref(), Some("jane"));
        assert_eq!(mail.subject, "jane commented on \"Dragons\"");
        assert!(mail.body.contains("Nice!"));
    }

    #[test]
    fn nobody_is_notified_of_their_own_comment_or_favorite() {
        let author = Uuid::new_v4();
        assert!(plan(&comment(author, author, "me")).unwrap().is_empty());
        let favorite = new_envelope(
            "test",
            Payload::ArticleFavorited(ArticleFavorited {
                user_id: author.to_string(),
                username: "jake".into(),
                article: Some(article(author)),
            }),
        );
        assert!(plan(&favorite).unwrap().is_empty());
    }

    #[test]
    fn a_bad_id_is_a_malformed_event() {
        let followed = new_envelope(
            "test",
            Payload::UserFollowed(UserFollowed {
                follower_id: Uuid::new_v4().to_string(),
                follower_username: "jane".into(),
                followee_id: "not-a-uuid".into(),
                followee_username: "jake".into(),
            }),
        );
        assert!(plan(&followed).is_err());
    }

    #[test]
    fn long_bodies_are_cut_to_a_preview() {
        let long = "x".repeat(1000);
        assert_eq!(preview(&long).chars().count(), BODY_PREVIEW_CHARS + 1);
        assert_eq!(preview(" short "), "short");
    }

    #[test]
    fn kinds_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(Kind::from_proto(kind.to_proto()), Some(kind));
        }
        assert_eq!(Kind::from_proto(NotificationKind::Unspecified), None);
    }
}
