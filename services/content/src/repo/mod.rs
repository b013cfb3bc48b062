//! SQL, and nothing else. Each function is one statement, except where its
//! doc says otherwise; every statement is static text with bound parameters.

pub mod articles;
pub mod authors;
pub mod comments;
pub mod follows;
