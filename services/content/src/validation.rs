//! Rules for what clients send. Plain functions over plain values, so they
//! are tested without a network. Text is trimmed; limits count characters.

use crate::error::ContentError;

pub const MAX_TITLE_CHARS: usize = 300;
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
pub const MAX_BODY_CHARS: usize = 100_000;
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

pub type Violations = Vec<(&'static str, String)>;

/// A required text field: non-blank after trimming, at most `max` chars.
/// `single_line` fields (titles) refuse control characters; every field
/// refuses NUL, which PostgreSQL text cannot hold.
pub fn required_text(
    field: &'static str,
    value: &str,
    max: usize,
    single_line: bool,
    out: &mut Violations,
) -> String {
    let value = value.trim();
    if value.is_empty() {
        out.push((field, "can't be blank".into()));
    } else if value.chars().count() > max {
        out.push((field, format!("is too long (maximum is {max} characters)")));
    } else if value
        .chars()
        .any(|c| c == '\0' || (single_line && c.is_control()))
    {
        out.push((field, "contains control characters".into()));
    }
    value.to_owned()
}

pub fn title(value: &str, out: &mut Violations) -> String {
    required_text("title", value, MAX_TITLE_CHARS, true, out)
}

pub fn description(value: &str, out: &mut Violations) -> String {
    required_text("description", value, MAX_DESCRIPTION_CHARS, false, out)
}

pub fn body(value: &str, out: &mut Violations) -> String {
    required_text("body", value, MAX_BODY_CHARS, false, out)
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
    let body = required_text("body", value, MAX_COMMENT_CHARS, false, &mut out);
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
        body(&"x".repeat(MAX_BODY_CHARS + 1), &mut out);
        assert_eq!(out.len(), 2);
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
