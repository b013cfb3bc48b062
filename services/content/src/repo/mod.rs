//! SQL, and nothing else. Each function is one statement, except where its
//! doc says otherwise; every statement is static text with bound parameters.
//!
//! Statements are prepared once per connection and PostgreSQL soon caches a
//! generic plan for each: for these short queries planning costs several
//! times what executing does. The statements with optional parts
//! (`$n IS NULL OR ...`: the list filters, keyset positions) are the
//! exception: they run unnamed (`persistent(false)`), which PostgreSQL
//! plans for each call's parameters, folding the unset parts away so the
//! set ones use their indexes; a generic plan would keep them all and use
//! none.

pub mod articles;
pub mod authors;
pub mod comments;
pub mod follows;
