//! Opaque keyset cursors: the position (created_at, id) of the last article
//! of a page, signed so a client cannot forge or edit one. Tampering yields
//! an error, never a different page.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
/// A truncated tag is plenty against forgery of a pagination position.
const TAG_BYTES: usize = 16;
const PAYLOAD_BYTES: usize = 1 + 8 + 16;

/// Where the next page starts: strictly after this article in
/// (created_at DESC, id DESC) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cursor is malformed or was not issued by this service")]
pub struct BadCursor;

#[derive(Clone)]
pub struct CursorCodec {
    /// Keyed once at start; each use works on a clone.
    mac: HmacSha256,
}

impl CursorCodec {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }

    pub fn encode(&self, position: Position) -> String {
        let mut bytes = Vec::with_capacity(PAYLOAD_BYTES + TAG_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&position.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(position.id.as_bytes());
        let tag = self.tag(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(&self, cursor: &str) -> Result<Position, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
        if bytes.len() != PAYLOAD_BYTES + TAG_BYTES || bytes[0] != VERSION {
            return Err(BadCursor);
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_BYTES);
        // Constant-time comparison of the truncated tag.
        self.tag(payload)
            .verify_truncated_left(tag)
            .map_err(|_| BadCursor)?;
        let micros = i64::from_be_bytes(payload[1..9].try_into().map_err(|_| BadCursor)?);
        let id = Uuid::from_slice(&payload[9..25]).map_err(|_| BadCursor)?;
        // A signed time still gets a range check: chrono spans ±262,000
        // years, PostgreSQL's timestamptz only 4713 BC to 294276 AD, and a
        // time outside that fails the query as a database error. Years
        // 1-9999 hold every article's creation time with room to spare.
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(|t| (1..=9999).contains(&t.year()))
            .ok_or(BadCursor)?;
        Ok(Position { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position {
        Position {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn round_trips_with_microsecond_precision() {
        let codec = CursorCodec::new(b"a secret of sixteen+ bytes");
        let p = position();
        assert_eq!(codec.decode(&codec.encode(p)), Ok(p));
    }

    #[test]
    fn rejects_any_flipped_character() {
        let codec = CursorCodec::new(b"a secret of sixteen+ bytes");
        let cursor = codec.encode(position());
        for i in 0..cursor.len() {
            let mut chars: Vec<char> = cursor.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = chars.into_iter().collect();
            if tampered != cursor {
                assert_eq!(codec.decode(&tampered), Err(BadCursor), "position {i}");
            }
        }
    }

    #[test]
    fn rejects_signed_times_outside_the_database_range() {
        let codec = CursorCodec::new(b"a secret of sixteen+ bytes");
        for year in [-100_000, 0, 10_000, 200_000] {
            let position = Position {
                created_at: DateTime::from_timestamp_micros(0)
                    .unwrap()
                    .with_year(year)
                    .unwrap(),
                id: Uuid::now_v7(),
            };
            assert_eq!(
                codec.decode(&codec.encode(position)),
                Err(BadCursor),
                "{year}"
            );
        }
    }

    #[test]
    fn rejects_garbage_and_other_keys() {
        let codec = CursorCodec::new(b"a secret of sixteen+ bytes");
        for garbage in ["", "abc", "!!!!", "'; DROP TABLE articles; --", "🦀"] {
            assert_eq!(codec.decode(garbage), Err(BadCursor));
        }
        let other = CursorCodec::new(b"another secret, also long");
        assert_eq!(codec.decode(&other.encode(position())), Err(BadCursor));
    }
}
