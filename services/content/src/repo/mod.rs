//! SQL, and nothing else. Each function is one statement, except where its
//! doc says otherwise; every statement is static text with bound parameters.
//!
//! Statements are prepared once per connection and PostgreSQL soon caches a
//! generic plan for each: for these short queries planning costs several
//! times what executing does. The statements with optional parts
//! (`$n IS NULL OR ...`: the list filters, keyset positions) are the
//! exception: they run on a pool of their own whose connections plan each
//! call for its parameters ([`crate::config::CUSTOM_PLANS`]), folding the
//! unset parts away so the set ones use their indexes; a generic plan
//! would keep them all and use none. (Unnamed statements would be planned
//! per call too, but parsed per call as well: a third more database time
//! per list page.)

/// CTE `a`: the article `$id`, locked against edits for the statement,
/// if it is still as it was read (its `updated_at` is `$seen`). It opens
/// a write whose event was built from that read: an edit committed since,
/// or one in flight (it holds the row, and the lock waits for it), leaves
/// `a` empty, and the write writes nothing.
macro_rules! as_read {
    ($id:literal, $seen:literal) => {
        concat!(
            "a AS (SELECT id FROM articles WHERE id = ",
            $id,
            " AND updated_at = ",
            $seen,
            " FOR SHARE)"
        )
    };
}

pub mod articles;
pub mod authors;
pub mod comments;
pub mod follows;
