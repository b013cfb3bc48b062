//! RealWorld's JSON shapes shared by several resources.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;

/// ISO 8601 with milliseconds and `Z`, as RealWorld clients expect
/// (`2026-01-02T03:04:05.678Z`).
pub fn timestamp(ts: Option<&Timestamp>) -> String {
    ts.and_then(quill_platform::time::from_proto)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
