//! How often a write goes again before it gives up. A write meets a user
//! new to content's read-model (copied from auth once, outside any writer)
//! or, when it announces an article as it read it, an edit landing in
//! between (read again, a bounded number of times).

use uuid::Uuid;

use crate::{authors::Authors, error::ContentError};

/// Attempts at a write announcing an article as it was read (a favorite,
/// a comment) while edits of that article keep landing in between.
const AS_READ_ATTEMPTS: usize = 5;

/// What one request's write has tried so far.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    user_fetched: bool,
    reads: usize,
}

impl Attempts {
    /// `user` is not in the read-model: copy them from auth, once. Asked
    /// again, auth does not know them either.
    pub(crate) async fn fetch_user(
        &mut self,
        authors: &Authors,
        user: Uuid,
    ) -> Result<(), ContentError> {
        if self.user_fetched {
            return Err(ContentError::Unauthenticated("unknown user"));
        }
        authors.ensure(user).await?;
        self.user_fetched = true;
        Ok(())
    }

    /// The article moved between the read and the write: read it again,
    /// unless edits have kept landing every time. That is no fault of the
    /// service's: the caller is told to retry (ABORTED, HTTP 409). The
    /// warning names the article, so an operator can see which one is
    /// edited that often.
    pub(crate) fn read_again(&mut self, slug: &str) -> Result<(), ContentError> {
        self.reads += 1;
        if self.reads == AS_READ_ATTEMPTS {
            tracing::warn!(
                slug,
                attempts = AS_READ_ATTEMPTS,
                "the article was edited between every read and write"
            );
            return Err(ContentError::Contended("article"));
        }
        Ok(())
    }

    /// The article has been read again at least once.
    pub(crate) fn read_again_before(&self) -> bool {
        self.reads > 0
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn edits_landing_before_every_write_end_in_a_retry_not_an_internal_error() {
        let mut attempts = Attempts::default();
        for _ in 1..AS_READ_ATTEMPTS {
            attempts.read_again("busy").expect("read again");
        }
        assert!(attempts.read_again_before());
        let status = Status::from(attempts.read_again("busy").expect_err("gives up"));
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert_eq!(status.message(), "the article kept changing, try again");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "CONTENDED");
        assert_eq!(
            info.metadata.get("resource").map(String::as_str),
            Some("article")
        );
    }
}
