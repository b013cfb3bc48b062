//! One module per resource; each maps its REST routes to gRPC calls.

pub mod admin;
pub mod articles;
pub mod comments;
pub mod docs;
pub mod health;
pub mod notifications;
pub mod profiles;
pub mod tags;
pub mod users;
