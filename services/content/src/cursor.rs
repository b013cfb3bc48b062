//! Opaque keyset cursors: the position of the last row of a page ((created_at,
//! id) of an article, the id of a comment), signed so a client cannot forge
//! or edit one. Tampering yields an error, never a different page; the first
//! byte says which list a cursor belongs to, so one list's cursor is refused
//! by another.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// An article position; the format's first version, hence 1.
const ARTICLES: u8 = 1;
const COMMENTS: u8 = 2;
/// A truncated tag is plenty against forgery of a pagination position.
const TAG_BYTES: usize = 16;
const ARTICLE_PAYLOAD_BYTES: usize = 1 + 8 + 16;
const COMMENT_PAYLOAD_BYTES: usize = 1 + 8;

/// Where the next page starts: strictly after this article in
/// (created_at DESC, id DESC) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Where the next page of comments starts: strictly after this comment in
/// (id DESC) order, which is newest first since ids only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentPosition {
    pub id: i64,
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
        let mut payload = Vec::with_capacity(ARTICLE_PAYLOAD_BYTES);
        payload.push(ARTICLES);
        payload.extend_from_slice(&position.created_at.timestamp_micros().to_be_bytes());
        payload.extend_from_slice(position.id.as_bytes());
        self.seal(payload)
    }

    pub fn decode(&self, cursor: &str) -> Result<Position, BadCursor> {
        let payload = self.open(cursor, ARTICLES, ARTICLE_PAYLOAD_BYTES)?;
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

    pub fn encode_comment(&self, position: CommentPosition) -> String {
        let mut payload = Vec::with_capacity(COMMENT_PAYLOAD_BYTES);
        payload.push(COMMENTS);
        payload.extend_from_slice(&position.id.to_be_bytes());
        self.seal(payload)
    }

    pub fn decode_comment(&self, cursor: &str) -> Result<CommentPosition, BadCursor> {
        let payload = self.open(cursor, COMMENTS, COMMENT_PAYLOAD_BYTES)?;
        let id = i64::from_be_bytes(payload[1..9].try_into().map_err(|_| BadCursor)?);
        Ok(CommentPosition { id })
    }

    /// `payload` (whose first byte names its list) followed by its tag.
    fn seal(&self, mut payload: Vec<u8>) -> String {
        let tag = self.tag(&payload).finalize().into_bytes();
        payload.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The payload of a cursor of list `kind`, if this service issued it.
    fn open(&self, cursor: &str, kind: u8, payload_bytes: usize) -> Result<Vec<u8>, BadCursor> {
        let mut bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
        if bytes.len() != payload_bytes + TAG_BYTES || bytes[0] != kind {
            return Err(BadCursor);
        }
        let tag = bytes.split_off(payload_bytes);
        // Constant-time comparison of the truncated tag.
        self.tag(&bytes)
            .verify_truncated_left(&tag)
            .map_err(|_| BadCursor)?;
        Ok(bytes)
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

    #[test]
    fn comment_positions_round_trip_and_are_not_article_positions() {
        let codec = CursorCodec::new(b"a secret of sixteen+ bytes");
        let comment = CommentPosition { id: 1_234_567 };
        let cursor = codec.encode_comment(comment);
        assert_eq!(codec.decode_comment(&cursor), Ok(comment));
        assert_eq!(codec.decode(&cursor), Err(BadCursor));
        assert_eq!(
            codec.decode_comment(&codec.encode(position())),
            Err(BadCursor)
        );
        let other = CursorCodec::new(b"another secret, also long");
        assert_eq!(
            codec.decode_comment(&other.encode_comment(comment)),
            Err(BadCursor)
        );
    }
}
