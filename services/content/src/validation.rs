//! Rules for what clients send. Plain functions over plain values, so they
//! are tested without a network. Text is trimmed; limits count characters,
//! except the article body's, which counts bytes.
//!
//! The limits also bound what one list page can weigh, so that the largest
//! page fits in one gRPC message (`grpc::MAX_MESSAGE_BYTES`, 16 MiB) by
//! construction, whatever users post. A character is at most 4 bytes in
//! UTF-8; slugs are ASCII; profiles come from auth, bounded by
//! `quill_platform::limits`. Per row, besides user text, 1 KiB covers
//! protobuf keys and length prefixes, ids, timestamps, counters and flags:
//!
//! - an article: title 300 chars (1,200 B) + description 1,000 chars
//!   (4,000 B) + body 100,000 B + 20 tags of 64 chars (5,120 B) + slug
//!   103 B + author (username 256 B + bio 16,000 B + image 8,192 B) + 1 KiB
//!   = 135,895 B; a page of 100 is 13.6 MB.
//! - a comment: body 20,000 chars (80,000 B) + article slug 103 B + author
//!   24,448 B + 1 KiB = 105,575 B; a page of 100 is 10.6 MB.
//! - tags: at most 1,000 listed, 64 chars (256 B) + 1 KiB each: 1.3 MB.
//!
//! `a_maximal_page_of_any_list_fits_in_one_message` below keeps this true
//! when a limit changes. The body is the one field counted in bytes because
//! it dominates: at 100,000 characters it alone could be 400 kB a row.

use quill_platform::limits::{MAX_BIO_CHARS, MAX_IMAGE_CHARS, MAX_USERNAME_CHARS};

use crate::error::ContentError;

pub const MAX_TITLE_CHARS: usize = 300;
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
pub const MAX_BODY_BYTES: usize = 100_000;
pub const MAX_COMMENT_CHARS: usize = 20_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_QUERY_CHARS: usize = 256;
pub const MAX_FILTER_CHARS: usize = 256;
/// A generated slug is far shorter (`slug::MAX_SLUG_BASE_CHARS` plus a
/// suffix); this only keeps absurd path segments out of queries.
pub const MAX_SLUG_CHARS: usize = 256;
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// RealWorld clients show an article's comments from one answer without
/// asking for a page, so the default page holds all of an ordinary
/// article's; longer threads page on (`next_cursor`).
pub const DEFAULT_COMMENT_LIMIT: u32 = 100;
pub const MAX_COMMENT_LIMIT: u32 = 100;
/// The tag list (RealWorld's "popular tags") names the most used ones,
/// more on request. 100 by default: bounded, yet every tag of a small site,
/// which clients written to the spec ("a list of tags") expect to find
/// (the shared load script checks its 30 seeded tags are all there).
pub const DEFAULT_LISTED_TAGS: u32 = 100;
pub const MAX_LISTED_TAGS: u32 = 1_000;

/// The most bytes UTF-8 spends on one character.
const MAX_BYTES_PER_CHAR: usize = 4;
/// Per listed row, what is not user text: protobuf keys and length
/// prefixes, ids, timestamps, counters, flags.
const ROW_OVERHEAD_BYTES: usize = 1_024;

/// The most an author's profile adds to a row.
const fn max_profile_bytes() -> usize {
    (MAX_USERNAME_CHARS + MAX_BIO_CHARS + MAX_IMAGE_CHARS) * MAX_BYTES_PER_CHAR
}

/// The most one listed article weighs on the wire.
pub const fn max_article_bytes() -> usize {
    (MAX_TITLE_CHARS + MAX_DESCRIPTION_CHARS + MAX_TAGS * MAX_TAG_CHARS) * MAX_BYTES_PER_CHAR
        + MAX_BODY_BYTES
        + crate::slug::MAX_SLUG_BYTES
        + max_profile_bytes()
        + ROW_OVERHEAD_BYTES
}

/// The most one listed comment weighs on the wire.
pub const fn max_comment_bytes() -> usize {
    MAX_COMMENT_CHARS * MAX_BYTES_PER_CHAR
        + crate::slug::MAX_SLUG_BYTES
        + max_profile_bytes()
        + ROW_OVERHEAD_BYTES
}

/// How a text field's length is measured.
#[derive(Debug, Clone, Copy)]
pub enum Max {
    Chars(usize),
    Bytes(usize),
}

impl Max {
    fn exceeded_by(self, value: &str) -> bool {
        match self {
            Max::Chars(max) => value.chars().count() > max,
            Max::Bytes(max) => value.len() > max,
        }
    }
}

impl std::fmt::Display for Max {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Max::Chars(max) => write!(f, "{max} characters"),
            Max::Bytes(max) => write!(f, "{max} bytes"),
        }
    }
}

pub type Violations = Vec<(&'static str, String)>;

/// A required text field: non-blank after trimming, at most `max` long.
/// `single_line` fields (titles) refuse control characters; every field
/// refuses NUL, which PostgreSQL text cannot hold.
pub fn required_text(
    field: &'static str,
    value: &str,
    max: Max,
    single_line: bool,
    out: &mut Violations,
) -> String {
    let value = value.trim();
    if value.is_empty() {
        out.push((field, "can't be blank".into()));
    } else if max.exceeded_by(value) {
        out.push((field, format!("is too long (maximum is {max})")));
    } else if value
        .chars()
        .any(|c| c == '\0' || (single_line && c.is_control()))
    {
        out.push((field, "contains control characters".into()));
    }
    value.to_owned()
}

pub fn title(value: &str, out: &mut Violations) -> String {
    required_text("title", value, Max::Chars(MAX_TITLE_CHARS), true, out)
}

pub fn description(value: &str, out: &mut Violations) -> String {
    required_text(
        "description",
        value,
        Max::Chars(MAX_DESCRIPTION_CHARS),
        false,
        out,
    )
}

pub fn body(value: &str, out: &mut Violations) -> String {
    required_text("body", value, Max::Bytes(MAX_BODY_BYTES), false, out)
}

/// Tags trimmed, blanks dropped, duplicates removed, sorted.
pub fn tags(values: &[String], out: &mut Violations) -> Vec<String> {
    let mut tags: Vec<String> = values
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        out.push(("tags", format!("too many (maximum is {MAX_TAGS})")));
    }
    if tags.iter().any(|t| t.chars().count() > MAX_TAG_CHARS) {
        out.push((
            "tags",
            format!("a tag is too long (maximum is {MAX_TAG_CHARS} characters)"),
        ));
    }
    if tags.iter().any(|t| t.chars().any(char::is_control)) {
        out.push(("tags", "a tag contains control characters".into()));
    }
    tags
}

pub fn comment_body(value: &str) -> Result<String, ContentError> {
    let mut out = Violations::new();
    let body = required_text(
        "body",
        value,
        Max::Chars(MAX_COMMENT_CHARS),
        false,
        &mut out,
    );
    finish(out)?;
    Ok(body)
}

/// Fails with every violation collected, or passes.
pub fn finish(violations: Violations) -> Result<(), ContentError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ContentError::Invalid(violations))
    }
}

/// An optional filter (tag, username): trimmed; blank means "no filter".
pub fn filter(field: &'static str, value: Option<&str>, out: &mut Violations) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    if value.chars().count() > MAX_FILTER_CHARS || value.contains('\0') {
        out.push((field, "is invalid".into()));
        return None;
    }
    Some(value.to_owned())
}

/// A full-text query; blank means "no search".
pub fn search_query(value: Option<&str>, out: &mut Violations) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    if value.chars().count() > MAX_QUERY_CHARS {
        out.push((
            "query",
            format!("is too long (maximum is {MAX_QUERY_CHARS} characters)"),
        ));
        return None;
    }
    if value.contains('\0') {
        out.push(("query", "contains control characters".into()));
        return None;
    }
    Some(value.to_owned())
}

/// A slug or username from a path: one that PostgreSQL text cannot hold
/// (NUL) or longer than any stored one names nothing, so it is "not found"
/// before it reaches a query (where NUL would be a database error).
pub fn lookup_key<'a>(
    what: &'static str,
    value: &'a str,
    max_chars: usize,
) -> Result<&'a str, ContentError> {
    let value = value.trim();
    if value.contains('\0') || value.chars().count() > max_chars {
        return Err(ContentError::NotFound(what));
    }
    Ok(value)
}

/// The article a path's slug names, see [`lookup_key`].
pub fn slug(value: &str) -> Result<&str, ContentError> {
    lookup_key("article", value, MAX_SLUG_CHARS)
}

/// The profile a path's username names, see [`lookup_key`].
pub fn username(value: &str) -> Result<&str, ContentError> {
    lookup_key("profile", value, MAX_FILTER_CHARS)
}

/// RealWorld paging: 0 means the default, larger than the maximum is capped.
/// A huge offset is no error; it yields an empty page.
pub fn limit(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    })
}

/// A page of comments: as [`limit`], with the comments' default and cap.
pub fn comment_limit(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_COMMENT_LIMIT,
        n => n.min(MAX_COMMENT_LIMIT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_missing_fields_are_named() {
        let mut out = Violations::new();
        title("   ", &mut out);
        description("", &mut out);
        body("\n\t", &mut out);
        let fields: Vec<_> = out.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["title", "description", "body"]);
        assert!(out.iter().all(|(_, m)| m == "can't be blank"));
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        let mut out = Violations::new();
        assert_eq!(title("  Hi  ", &mut out), "Hi");
        // 300 multi-byte characters are fine; 301 are not.
        title(&"я".repeat(MAX_TITLE_CHARS), &mut out);
        assert!(out.is_empty());
        title(&"я".repeat(MAX_TITLE_CHARS + 1), &mut out);
        body(&"x".repeat(MAX_BODY_BYTES + 1), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn the_body_is_bounded_in_bytes() {
        let mut out = Violations::new();
        body(&"😀".repeat(MAX_BODY_BYTES / 4), &mut out);
        assert!(out.is_empty());
        body(&"😀".repeat(MAX_BODY_BYTES / 4 + 1), &mut out);
        assert_eq!(
            out,
            [(
                "body",
                format!("is too long (maximum is {MAX_BODY_BYTES} bytes)")
            )]
        );
    }

    #[test]
    fn a_maximal_page_of_any_list_fits_in_one_message() {
        use quill_platform::grpc::MAX_MESSAGE_BYTES;
        // The list's own fields (count, cursor) and the page's row keys.
        let page_overhead = 1_024;
        let pages = [
            ("articles", MAX_LIMIT as usize, max_article_bytes()),
            ("comments", MAX_COMMENT_LIMIT as usize, max_comment_bytes()),
            (
                "tags",
                MAX_LISTED_TAGS as usize,
                MAX_TAG_CHARS * MAX_BYTES_PER_CHAR + ROW_OVERHEAD_BYTES,
            ),
        ];
        for (list, rows, row_bytes) in pages {
            let page = rows * row_bytes + page_overhead;
            assert!(
                page < MAX_MESSAGE_BYTES,
                "a page of {rows} {list} may weigh {page} bytes, over {MAX_MESSAGE_BYTES}"
            );
        }
        // The figures the module comment gives.
        assert_eq!(max_article_bytes(), 135_895);
        assert_eq!(max_comment_bytes(), 105_575);
    }

    #[test]
    fn control_characters_are_refused_where_they_do_not_belong() {
        let mut out = Violations::new();
        body("line one\nline two\ttabbed", &mut out);
        assert!(out.is_empty());
        title("a\nb", &mut out);
        body("nul\0byte", &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn tags_are_trimmed_deduplicated_sorted_and_bounded() {
        let mut out = Violations::new();
        let input: Vec<String> = ["rust", " go ", "", "rust", "  ", "日本語", "%_\\"]
            .map(String::from)
            .to_vec();
        assert_eq!(tags(&input, &mut out), ["%_\\", "go", "rust", "日本語"]);
        assert!(out.is_empty());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        tags(&many, &mut out);
        tags(&["x".repeat(MAX_TAG_CHARS + 1)], &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(limit(0), 20);
        assert_eq!(limit(7), 7);
        assert_eq!(limit(u32::MAX), 100);
        assert_eq!(comment_limit(0), 100);
        assert_eq!(comment_limit(7), 7);
        assert_eq!(comment_limit(u32::MAX), 100);
    }

    #[test]
    fn blank_filters_and_queries_mean_none() {
        let mut out = Violations::new();
        assert_eq!(filter("tag", Some("  "), &mut out), None);
        assert_eq!(filter("tag", Some(" a "), &mut out), Some("a".into()));
        assert_eq!(search_query(Some(""), &mut out), None);
        assert_eq!(search_query(None, &mut out), None);
        assert!(out.is_empty());
        search_query(Some(&"q".repeat(MAX_QUERY_CHARS + 1)), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn keys_that_no_row_can_have_are_not_found() {
        assert_eq!(slug(" how-to ").unwrap(), "how-to");
        for bad in ["a\0b", "\0", &"s".repeat(MAX_SLUG_CHARS + 1)] {
            assert!(matches!(slug(bad), Err(ContentError::NotFound("article"))));
            assert!(matches!(
                username(bad),
                Err(ContentError::NotFound("profile"))
            ));
        }
    }

    #[test]
    fn nul_is_refused_in_every_text_field() {
        let mut out = Violations::new();
        title("a\0b", &mut out);
        description("a\0b", &mut out);
        tags(&["a\0b".to_owned()], &mut out);
        filter("author", Some("a\0b"), &mut out);
        search_query(Some("a\0b"), &mut out);
        let fields: Vec<_> = out.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["title", "description", "tags", "author", "query"]);
        assert!(comment_body("a\0b").is_err());
    }

    #[test]
    fn comment_bodies_are_required() {
        assert!(comment_body("  ").is_err());
        assert_eq!(comment_body(" ok ").unwrap(), "ok");
    }
}
