//! One module per resource; each maps its REST routes to gRPC calls.

pub mod admin;
pub mod health;
pub mod users;
