//! The JSON the REST API answers with: one `Serialize` type per shape, built
//! from the services' messages. Request bodies have their own types beside
//! their handlers.
//!
//! Fields are declared in alphabetical order of their JSON names. That is the
//! order the gateway sent when its bodies were `serde_json::Value`s (whose
//! maps sort their keys), so typing them changed no byte on the wire; the
//! tests compare each body as text against the `json!` it replaced. An
//! `Option` is `null` when unset unless it is marked to be left out.

pub mod accounts;
pub mod articles;
pub mod health;
pub mod notifications;

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;

use crate::error::ApiError;

/// ISO 8601 with milliseconds and `Z`, as RealWorld clients expect
/// (`2026-01-02T03:04:05.678Z`).
fn timestamp(ts: Option<&Timestamp>) -> String {
    ts.and_then(quill_platform::time::from_proto)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An upstream answer that lacks a part every answer has is an upstream bug,
/// reported as a 500 rather than passed on as a `null`.
fn incomplete(what: &str) -> ApiError {
    ApiError::from(tonic::Status::internal(format!(
        "incomplete response: {what}"
    )))
}

#[cfg(test)]
mod testing {
    use prost_types::Timestamp;
    use serde::Serialize;

    pub fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    /// Asserts that `body` goes on the wire exactly as `expected` (the
    /// `json!` value the gateway used to send) does: same keys in the same
    /// order, same `null`s, same number types.
    #[track_caller]
    pub fn assert_sent_as(body: &impl Serialize, expected: &serde_json::Value) {
        assert_eq!(
            serde_json::to_string(body).unwrap(),
            serde_json::to_string(expected).unwrap()
        );
    }
}
