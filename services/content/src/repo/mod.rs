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

pub mod articles;
pub mod authors;
pub mod comments;
pub mod follows;
