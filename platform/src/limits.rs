//! Sizes of the profile fields every service carries: auth validates them,
//! content and notification copy them into their answers. They live here so
//! that the services that only carry them can check their message sizes
//! against the same numbers (see `quill_content::validation`).

/// Counted in characters, so at most four bytes each in UTF-8.
pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_BIO_CHARS: usize = 4_000;
/// An image URL; URLs are ASCII in practice, but nothing enforces it.
pub const MAX_IMAGE_CHARS: usize = 2_048;
