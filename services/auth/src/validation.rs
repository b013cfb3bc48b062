//! Rules for account fields. Plain functions over plain values, so they are
//! tested without a network.

use crate::error::AuthError;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Argon2 cost does not depend on length much, but unbounded input does.
pub const MAX_PASSWORD_BYTES: usize = 256;
pub const MAX_EMAIL_CHARS: usize = 254;
/// Shared with the services that carry profiles, which size their answers
/// by them.
pub use quill_platform::limits::{MAX_BIO_CHARS, MAX_IMAGE_CHARS, MAX_USERNAME_CHARS};
pub const MAX_USER_QUERY_CHARS: usize = 256;

type Violations = Vec<(&'static str, String)>;

pub fn email(value: &str, out: &mut Violations) -> String {
    let value = value.trim();
    let valid_shape = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if value.is_empty() {
        out.push(("email", "can't be blank".into()));
    } else if value.chars().count() > MAX_EMAIL_CHARS {
        out.push((
            "email",
            format!("is too long (maximum is {MAX_EMAIL_CHARS} characters)"),
        ));
    } else if !valid_shape || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        out.push(("email", "is invalid".into()));
    }
    value.to_owned()
}

pub fn username(value: &str, out: &mut Violations) -> String {
    let value = value.trim();
    if value.is_empty() {
        out.push(("username", "can't be blank".into()));
    } else if value.chars().count() > MAX_USERNAME_CHARS {
        out.push((
            "username",
            format!("is too long (maximum is {MAX_USERNAME_CHARS} characters)"),
        ));
    } else if !value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        // Usernames appear in URLs (/profiles/{username}); keep them path-safe.
        out.push((
            "username",
            "may only contain letters, digits, '_', '-' and '.'".into(),
        ));
    }
    value.to_owned()
}

pub fn password(value: &str, out: &mut Violations) {
    if value.is_empty() {
        out.push(("password", "can't be blank".into()));
    } else if value.chars().count() < MIN_PASSWORD_CHARS {
        out.push((
            "password",
            format!("is too short (minimum is {MIN_PASSWORD_CHARS} characters)"),
        ));
    } else if value.len() > MAX_PASSWORD_BYTES {
        out.push((
            "password",
            format!("is too long (maximum is {MAX_PASSWORD_BYTES} bytes)"),
        ));
    }
}

/// Bio and image: empty means "clear it". `single_line` fields (image URLs)
/// refuse control characters; every field refuses NUL, which PostgreSQL
/// text cannot hold.
pub fn optional_text(
    field: &'static str,
    value: &str,
    max_chars: usize,
    single_line: bool,
    out: &mut Violations,
) -> Option<String> {
    let value = value.trim();
    if value.chars().count() > max_chars {
        out.push((
            field,
            format!("is too long (maximum is {max_chars} characters)"),
        ));
    } else if value
        .chars()
        .any(|c| c == '\0' || (single_line && c.is_control()))
    {
        out.push((field, "contains control characters".into()));
    }
    (!value.is_empty()).then(|| value.to_owned())
}

/// The email a login names: only required, since the shape rules may have
/// changed since an account was made; but one PostgreSQL text cannot hold
/// (NUL) is refused before the lookup, where it would be a database error.
pub fn login_email(value: &str, out: &mut Violations) -> String {
    let value = value.trim();
    if value.is_empty() {
        out.push(("email", "can't be blank".into()));
    } else if value.contains('\0') || value.chars().count() > MAX_EMAIL_CHARS {
        out.push(("email", "is invalid".into()));
    }
    value.to_owned()
}

/// A username that names an account (profile, role, ban): one no account
/// can have (NUL, too long) is "not found" before the lookup, where NUL
/// would be a database error.
pub fn lookup_username(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    if value.contains('\0') || value.chars().count() > MAX_USERNAME_CHARS {
        return Err(AuthError::NotFound("user"));
    }
    Ok(value)
}

/// The administrators' user search: bounded, and NUL-free for PostgreSQL.
pub fn user_query(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    if value.chars().count() > MAX_USER_QUERY_CHARS {
        return Err(AuthError::invalid(
            "query",
            format!("is too long (maximum is {MAX_USER_QUERY_CHARS} characters)"),
        ));
    }
    if value.contains('\0') {
        return Err(AuthError::invalid("query", "contains control characters"));
    }
    Ok(value)
}

pub fn finish(violations: Violations) -> Result<(), AuthError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AuthError::Invalid(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Violations)) -> Violations {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    #[test]
    fn emails() {
        assert!(
            check(|v| {
                email(" a@b.co ", v);
            })
            .is_empty()
        );
        assert_eq!(
            check(|v| {
                email("", v);
            })[0]
                .1,
            "can't be blank"
        );
        for bad in ["nobody", "@b.co", "a@b", "a b@c.de", "a@.co", "a@co."] {
            assert_eq!(
                check(|v| {
                    email(bad, v);
                })[0]
                    .1,
                "is invalid",
                "{bad}"
            );
        }
    }

    #[test]
    fn usernames_allow_unicode_letters_but_not_path_characters() {
        assert!(
            check(|v| {
                username("žofie_ü-1.x", v);
            })
            .is_empty()
        );
        for bad in ["a/b", "a b", "a?b", "a%2F", "'; DROP TABLE users; --"] {
            assert!(
                !check(|v| {
                    username(bad, v);
                })
                .is_empty(),
                "{bad}"
            );
        }
        assert!(
            !check(|v| {
                username(&"x".repeat(65), v);
            })
            .is_empty()
        );
    }

    #[test]
    fn passwords_have_bounds() {
        assert!(check(|v| password("correct horse", v)).is_empty());
        assert!(!check(|v| password("short", v)).is_empty());
        assert!(!check(|v| password(&"p".repeat(257), v)).is_empty());
    }

    #[test]
    fn empty_optional_text_clears() {
        assert_eq!(
            check(|v| assert_eq!(optional_text("bio", "  ", 10, false, v), None)).len(),
            0
        );
        assert_eq!(
            check(|v| {
                optional_text("bio", "elevenchars", 10, false, v);
            })
            .len(),
            1
        );
    }

    #[test]
    fn nul_is_refused_everywhere_and_other_controls_in_single_lines() {
        assert!(
            check(|v| {
                optional_text("bio", "line one\nline two", 100, false, v);
            })
            .is_empty()
        );
        for (value, single_line) in [("a\0b", false), ("a\0b", true), ("a\nb", true)] {
            assert_eq!(
                check(|v| {
                    optional_text("image", value, 100, single_line, v);
                })[0]
                    .1,
                "contains control characters",
                "{value:?}"
            );
        }
        assert_eq!(
            check(|v| {
                login_email("jake\0@example.com", v);
            })[0]
                .1,
            "is invalid"
        );
        assert!(matches!(
            lookup_username("ja\0ke"),
            Err(AuthError::NotFound("user"))
        ));
        assert_eq!(lookup_username(" jake ").unwrap(), "jake");
        assert!(matches!(user_query("a\0"), Err(AuthError::Invalid(_))));
    }
}
