//! Strong entity tags built from the versions of what an answer shows,
//! before it is rendered: an unchanged answer is a 304 without its JSON
//! ever being built (see `conditional`).
//!
//! An article's text, title, slug and tags change only with its
//! `updated_at` (content sets it from the clock on every edit), so the tag
//! covers them by that stamp and never hashes the body. What an edit does
//! not stamp is taken as it is: the favorites count, the viewer's flags and
//! the author's profile, all a few bytes. A comment likewise. Lists and
//! profiles are their members' versions, tags their names.
//!
//! The gateway's own rendering is part of every answer too: its release
//! (a new one may render differently) and the default avatar it shows for
//! users without an image.

use axum::http::HeaderValue;
use prost_types::Timestamp;
use quill_proto::content::v1 as pb;
use sha2::{Digest, Sha256};

/// Something whose answer changes exactly when what it feeds a [`Tag`] does.
pub trait Versioned {
    fn version(&self, tag: &mut Tag);
}

/// A strong entity tag being built: fields are length-prefixed, so no two
/// different sequences of fields hash alike.
pub struct Tag(Sha256);

impl Tag {
    /// A tag for an answer of `kind` (one resource's answers are one kind).
    /// `None` cannot happen (hex digits and quotes are a header value), and
    /// would only leave the answer untagged.
    pub fn of(kind: &str, answer: &impl Versioned) -> Option<HeaderValue> {
        let mut tag = Self(Sha256::new());
        tag.text(env!("CARGO_PKG_VERSION"))
            .optional(crate::avatar::default_avatar().as_deref())
            .text(kind);
        answer.version(&mut tag);
        tag.finish()
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    pub fn optional(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.flag(true).text(text),
            None => self.flag(false),
        }
    }

    pub fn number(&mut self, n: u64) -> &mut Self {
        self.0.update(n.to_le_bytes());
        self
    }

    pub fn flag(&mut self, flag: bool) -> &mut Self {
        self.0.update([u8::from(flag)]);
        self
    }

    pub fn stamp(&mut self, stamp: Option<&Timestamp>) -> &mut Self {
        let (seconds, nanos) = stamp.map_or((0, 0), |t| (t.seconds, t.nanos));
        self.0.update(seconds.to_le_bytes());
        self.0.update(nanos.to_le_bytes());
        self
    }

    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.number(bytes.len() as u64);
        self.0.update(bytes);
        self
    }

    /// `"` and 32 hex digits (128 bits: no two answers of one resource
    /// will ever share one).
    fn finish(self) -> Option<HeaderValue> {
        let digest = self.0.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::try_from(format!("\"{hex}\"")).ok()
    }
}

impl<T: Versioned> Versioned for Option<T> {
    fn version(&self, tag: &mut Tag) {
        tag.flag(self.is_some());
        if let Some(inner) = self {
            inner.version(tag);
        }
    }
}

impl<T: Versioned> Versioned for [T] {
    fn version(&self, tag: &mut Tag) {
        tag.number(self.len() as u64);
        for item in self {
            item.version(tag);
        }
    }
}

impl Versioned for pb::Profile {
    fn version(&self, tag: &mut Tag) {
        tag.text(&self.username)
            .optional(self.bio.as_deref())
            .optional(self.image.as_deref())
            .flag(self.following);
    }
}

impl Versioned for pb::Article {
    fn version(&self, tag: &mut Tag) {
        tag.text(&self.id)
            .stamp(self.updated_at.as_ref())
            .number(self.favorites_count)
            .flag(self.favorited);
        self.author.version(tag);
    }
}

impl Versioned for pb::Comment {
    fn version(&self, tag: &mut Tag) {
        tag.number(self.id as u64).stamp(self.updated_at.as_ref());
        self.author.version(tag);
    }
}

impl Versioned for pb::ListArticlesResponse {
    fn version(&self, tag: &mut Tag) {
        self.articles.version(tag);
        tag.number(self.articles_count)
            .optional(self.next_cursor.as_deref());
    }
}

impl Versioned for pb::ListCommentsResponse {
    fn version(&self, tag: &mut Tag) {
        self.comments.version(tag);
        tag.optional(self.next_cursor.as_deref());
    }
}

impl Versioned for pb::ListTagsResponse {
    fn version(&self, tag: &mut Tag) {
        tag.number(self.tags.len() as u64);
        for name in &self.tags {
            tag.text(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> pb::Article {
        pb::Article {
            id: "a1".into(),
            slug: "dragons".into(),
            title: "Dragons".into(),
            body: "b".repeat(10_000),
            updated_at: Some(Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            author: Some(pb::Profile {
                id: "u1".into(),
                username: "jake".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_tag_is_strong_and_follows_every_version_shown() {
        let base = Tag::of("article", &article()).unwrap();
        let text = base.to_str().unwrap();
        assert!(text.starts_with('"') && text.len() == 34, "{text}");
        assert_eq!(Some(&base), Tag::of("article", &article()).as_ref());

        let changes: [fn(&mut pb::Article); 6] = [
            |a| a.updated_at.as_mut().unwrap().nanos += 1000,
            |a| a.favorites_count += 1,
            |a| a.favorited = true,
            |a| a.author.as_mut().unwrap().following = true,
            |a| a.author.as_mut().unwrap().bio = Some(String::new()),
            |a| a.author.as_mut().unwrap().image = Some("http://i".into()),
        ];
        for change in changes {
            let mut changed = article();
            change(&mut changed);
            assert_ne!(Some(&base), Tag::of("article", &changed).as_ref());
        }
        assert_ne!(Some(&base), Tag::of("other", &article()).as_ref());
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        let profile = |username: &str, bio: &str| pb::Profile {
            username: username.into(),
            bio: Some(bio.into()),
            ..Default::default()
        };
        assert_ne!(
            Tag::of("profile", &profile("ab", "c")),
            Tag::of("profile", &profile("a", "bc"))
        );
        let tags = |names: &[&str]| pb::ListTagsResponse {
            tags: names.iter().map(|n| n.to_string()).collect(),
        };
        assert_ne!(
            Tag::of("tags", &tags(&["ab"])),
            Tag::of("tags", &tags(&["a", "b"]))
        );
    }
}
