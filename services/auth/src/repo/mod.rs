//! SQL, and nothing else: each function is one statement.

pub mod sessions;
pub mod users;
