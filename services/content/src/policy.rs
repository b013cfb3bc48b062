//! Who may do what to which content. Decisions come from the shared
//! permission table (`quill_platform::authz`) plus ownership; handlers ask
//! here instead of comparing roles themselves.

pub use quill_platform::authn::Caller;
use quill_platform::authz::{Denied, Permission};
use uuid::Uuid;

use crate::error::ContentError;

pub fn may_publish(caller: &Caller) -> Result<(), ContentError> {
    Ok(caller.role.require(Permission::ArticleCreate)?)
}

/// Refreshing content's copy of a user: the user, or who manages users.
pub fn may_refresh_author(caller: &Caller, user: Uuid) -> Result<(), ContentError> {
    if caller.user == user {
        return Ok(());
    }
    Ok(caller.role.require(Permission::UserManage)?)
}

/// Update and delete: the author, or a moderator.
pub fn may_change_article(caller: &Caller, author_id: Uuid) -> Result<(), ContentError> {
    if caller.user == author_id || caller.role.can(Permission::ArticleModerate) {
        Ok(())
    } else {
        Err(Denied::Rule("only the author or a moderator may change this article").into())
    }
}

/// The comment's author, the article's author (it is their page), or a
/// moderator.
pub fn may_delete_comment(
    caller: &Caller,
    comment_author: Uuid,
    article_author: Uuid,
) -> Result<(), ContentError> {
    if caller.user == comment_author
        || caller.user == article_author
        || caller.role.can(Permission::CommentModerate)
    {
        Ok(())
    } else {
        Err(Denied::Rule(
            "only the comment's author, the article's author or a moderator may delete this comment",
        ).into())
    }
}

#[cfg(test)]
mod tests {
    use quill_platform::authz::Role;

    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            user: Uuid::new_v4(),
            session: Uuid::new_v4(),
            role,
            expires_at: 0,
        }
    }

    #[test]
    fn viewers_may_not_publish() {
        assert!(may_publish(&caller(Role::Viewer)).is_err());
        assert!(may_publish(&caller(Role::Creator)).is_ok());
        assert!(may_publish(&caller(Role::Admin)).is_ok());
    }

    #[test]
    fn articles_change_by_their_author_or_a_moderator() {
        let author = caller(Role::Creator);
        assert!(may_change_article(&author, author.user).is_ok());
        assert!(may_change_article(&caller(Role::Creator), author.user).is_err());
        assert!(may_change_article(&caller(Role::Admin), author.user).is_ok());
    }

    #[test]
    fn comments_go_by_their_author_the_articles_author_or_a_moderator() {
        let (writer, owner) = (caller(Role::Viewer), caller(Role::Creator));
        assert!(may_delete_comment(&writer, writer.user, owner.user).is_ok());
        assert!(may_delete_comment(&owner, writer.user, owner.user).is_ok());
        assert!(may_delete_comment(&caller(Role::Creator), writer.user, owner.user).is_err());
        assert!(may_delete_comment(&caller(Role::Admin), writer.user, owner.user).is_ok());
    }
}
