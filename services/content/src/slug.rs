//! Article slugs: readable, URL-safe, derived from the title, unique.

use rand::Rng;

/// Slugs stay short enough for a URL path even for 300-character titles.
pub const MAX_SLUG_BASE_CHARS: usize = 96;
const SUFFIX_CHARS: usize = 6;
/// The longest slug: a base, '-' and a suffix. Slugs are ASCII, so this is
/// also their size in bytes.
pub const MAX_SLUG_BYTES: usize = MAX_SLUG_BASE_CHARS + 1 + SUFFIX_CHARS;
const BASE36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The slug a title asks for: transliterated to ASCII ("Привет мир" becomes
/// "privet-mir"), lowercase words joined by '-', cut at a word boundary.
/// A title with nothing to transliterate (emoji only) becomes "article".
pub fn from_title(title: &str) -> String {
    let full = slug::slugify(title);
    let mut base = if full.len() <= MAX_SLUG_BASE_CHARS {
        full
    } else {
        // `slugify` output is ASCII, so byte offsets are char boundaries.
        let cut = &full[..MAX_SLUG_BASE_CHARS];
        match cut.rfind('-') {
            Some(at) if at > 0 => cut[..at].to_owned(),
            _ => cut.to_owned(),
        }
    };
    if base.is_empty() {
        base = "article".to_owned();
    }
    base
}

/// `base` made distinct from a taken slug: "-" and six random base36 chars.
pub fn with_random_suffix(base: &str, rng: &mut impl Rng) -> String {
    let suffix: String = (0..SUFFIX_CHARS)
        .map(|_| BASE36[rng.gen_range(0..BASE36.len())] as char)
        .collect();
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_become_lowercase_dashed_ascii() {
        assert_eq!(
            from_title("How to train your dragon"),
            "how-to-train-your-dragon"
        );
        assert_eq!(from_title("  Hello,   World!  "), "hello-world");
        assert_eq!(from_title("Привет мир"), "privet-mir");
        assert_eq!(
            from_title("'; DROP TABLE articles; --"),
            "drop-table-articles"
        );
        assert_eq!(from_title("%_\\"), "article");
        assert_eq!(from_title("🦀🦀"), "crab-crab");
    }

    #[test]
    fn titles_without_letters_fall_back_to_article() {
        assert_eq!(from_title(""), "article");
        assert_eq!(from_title("!!! ---"), "article");
    }

    #[test]
    fn long_titles_are_cut_at_a_word_boundary() {
        let slug = from_title(&"word ".repeat(100));
        assert!(slug.len() <= MAX_SLUG_BASE_CHARS);
        assert!(slug.ends_with("word"), "{slug}");
        let unbroken = from_title(&"a".repeat(300));
        assert_eq!(unbroken.len(), MAX_SLUG_BASE_CHARS);
    }

    #[test]
    fn suffixes_are_six_base36_chars() {
        let mut rng = rand::thread_rng();
        let slug = with_random_suffix("title", &mut rng);
        let (base, suffix) = slug.rsplit_once('-').unwrap();
        assert_eq!(base, "title");
        assert_eq!(suffix.len(), 6);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(slug, with_random_suffix("title", &mut rng));
    }
}
