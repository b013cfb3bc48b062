//! Conversions between chrono and protobuf timestamps.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

pub fn to_proto(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_proto(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}
