//! Uploaded images (avatars, article images), stored outside the database
//! through `object_store`: a local directory by default, an S3-compatible
//! bucket in production. Names are content addresses (`<sha256>.<ext>`), so
//! an upload is idempotent, a stored file never changes (it may be cached
//! forever), and a name can only be one the gateway wrote: a path a client
//! chose never reaches the store.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use object_store::{
    GetResult, ObjectStore, PutPayload, local::LocalFileSystem, path::Path, prefix::PrefixStore,
};
use sha2::{Digest, Sha256};

/// The formats accepted, told by their first bytes: what a client declares
/// is not trusted, and a file that is not one of these (an SVG, which can
/// carry script; an HTML page) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl ImageKind {
    /// The format `bytes` begin with, if any of the accepted ones.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Gif => "gif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
        }
    }

    fn from_extension(extension: &str) -> Option<Self> {
        [Self::Jpeg, Self::Png, Self::Webp, Self::Gif]
            .into_iter()
            .find(|kind| kind.extension() == extension)
    }
}

/// A stored image's name: 64 lowercase hex digits of its SHA-256, a dot,
/// its format's extension. The store keeps no content type (the local
/// filesystem cannot), so the extension, which the gateway chose from the
/// sniffed bytes, is where the type is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    digest: String,
    kind: ImageKind,
}

impl ImageName {
    fn of(chunks: &[Bytes], kind: ImageKind) -> Self {
        let mut hasher = Sha256::new();
        for chunk in chunks {
            hasher.update(chunk);
        }
        let digest = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { digest, kind }
    }

    /// A name as the gateway writes it, and nothing else.
    pub fn parse(name: &str) -> Option<Self> {
        let (digest, extension) = name.split_once('.')?;
        let is_digest = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let kind = ImageKind::from_extension(extension)?;
        is_digest.then(|| Self {
            digest: digest.to_owned(),
            kind,
        })
    }

    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// A strong validator for free: the name is the content's hash.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.digest)
    }

    fn path(&self) -> Path {
        Path::from(self.to_string())
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.digest, self.kind.extension())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a directory or a file:// or s3:// URL")]
    Location(String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("{0}: {1}")]
    Directory(String, std::io::Error),
}

/// Options of an `s3://` store: the `AWS_*` variables, named as
/// `object_store` names them (`aws_endpoint`, `aws_allow_http`, ...).
/// Printed as names only: the values include the secret key.
#[derive(Clone, Default)]
pub struct StoreOptions(pub Vec<(String, String)>);

impl StoreOptions {
    pub fn from_env() -> Self {
        Self(
            std::env::vars()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .map(|(key, value)| (key.to_ascii_lowercase(), value))
                .collect(),
        )
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

#[derive(Clone)]
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageStore({})", self.store)
    }
}

impl ImageStore {
    /// `location` is a directory (created if missing), a `file://` URL, or
    /// an `s3://bucket/prefix` URL whose credentials, region and endpoint
    /// are in `options` (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for MinIO and
    /// other S3-compatible stores).
    pub fn open(location: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let store: Arc<dyn ObjectStore> = match location.split_once("://") {
            None => Arc::new(local_directory(std::path::Path::new(location))?),
            Some(("file", _)) => {
                let url = url::Url::parse(location)
                    .map_err(|_| StoreError::Location(location.to_owned()))?;
                let directory = url
                    .to_file_path()
                    .map_err(|()| StoreError::Location(location.to_owned()))?;
                Arc::new(local_directory(&directory)?)
            }
            Some(("s3", _)) => {
                let url = url::Url::parse(location)
                    .map_err(|_| StoreError::Location(location.to_owned()))?;
                let (bucket, prefix) = object_store::parse_url_opts(&url, options.0.clone())?;
                Arc::new(PrefixStore::new(bucket, prefix))
            }
            Some(_) => return Err(StoreError::Location(location.to_owned())),
        };
        Ok(Self { store })
    }

    /// Stores an image (already sniffed as `kind`), as the chunks it
    /// arrived in, under its content address. Storing the same image twice
    /// writes the same object again: harmless, and it needs no conditional
    /// put, which not every S3-compatible store offers.
    pub async fn save(&self, chunks: Vec<Bytes>, kind: ImageKind) -> Result<ImageName, StoreError> {
        let name = ImageName::of(&chunks, kind);
        let payload: PutPayload = chunks.into_iter().collect();
        self.store.put(&name.path(), payload).await?;
        Ok(name)
    }

    /// The stored image's size, without reading it (`HEAD`).
    pub async fn size(&self, name: &ImageName) -> Result<Option<u64>, StoreError> {
        match self.store.head(&name.path()).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the store for a name nobody wrote, so a bucket that refuses the
    /// credentials, or cannot be reached, shows in the log at start rather
    /// than at the first upload. Not fatal: images are one feature, and a
    /// store that is down now may be up in a minute.
    pub async fn check(&self) {
        let probe = Path::from("quill-start-probe");
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::error!(
                store = %self.store,
                error = %error,
                "the image store refuses or cannot be reached; uploads and images will fail"
            ),
        }
    }

    /// The stored image, streamed; `None` if there is none of that name.
    pub async fn fetch(&self, name: &ImageName) -> Result<Option<GetResult>, StoreError> {
        match self.store.get(&name.path()).await {
            Ok(found) => Ok(Some(found)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn local_directory(directory: &std::path::Path) -> Result<LocalFileSystem, StoreError> {
    let shown = || directory.display().to_string();
    std::fs::create_dir_all(directory).map_err(|e| StoreError::Directory(shown(), e))?;
    let absolute =
        std::fs::canonicalize(directory).map_err(|e| StoreError::Directory(shown(), e))?;
    Ok(LocalFileSystem::new_with_prefix(absolute)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(
            ImageKind::sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageKind::Png)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a\x01\0"), Some(ImageKind::Gif));
        assert_eq!(ImageKind::sniff(b"GIF87a\x01\0"), Some(ImageKind::Gif));
        assert_eq!(
            ImageKind::sniff(b"RIFF\x24\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        for refused in [
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>"[..],
            b"<!DOCTYPE html>",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\x89PNG",
            b"",
        ] {
            assert_eq!(ImageKind::sniff(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn a_name_is_the_hash_of_the_whole_content_and_the_sniffed_extension() {
        let name = ImageName::of(
            &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            ImageKind::Png,
        );
        assert_eq!(
            name.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"
        );
        assert_eq!(ImageName::parse(&name.to_string()), Some(name));
    }

    #[test]
    fn only_names_the_gateway_writes_parse() {
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for refused in [
            format!("{digest}.svg"),
            format!("{digest}.PNG"),
            format!("{digest}.png.html"),
            format!("{}.png", digest.to_uppercase()),
            format!("{}.png", &digest[1..]),
            format!("../{}.png", &digest[3..]),
            digest.to_owned(),
            "..%2F..%2Fetc%2Fpasswd".to_owned(),
            String::new(),
        ] {
            assert_eq!(ImageName::parse(&refused), None, "{refused}");
        }
    }

    #[test]
    fn a_location_is_a_directory_or_a_known_url() {
        for refused in ["ftp://host/dir", "gs://bucket", "file://host/not-local"] {
            assert!(
                matches!(
                    ImageStore::open(refused, &StoreOptions::default()),
                    Err(StoreError::Location(_))
                ),
                "{refused}"
            );
        }
    }
}
