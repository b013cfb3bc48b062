//! Image uploads (our extension): `POST /api/uploads` stores an image sent
//! as `multipart/form-data` and answers its URL, which a client then uses as
//! `image` (`PUT /api/user`) or in an article's body; `GET` serves it back.

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Multipart, Path, Request, State, multipart::MultipartError},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::Limited;
use serde::Serialize;

use crate::{
    config::UploadsConfig,
    error::ApiError,
    extract::AuthUser,
    images::{ImageKind, ImageName, StoreError},
    route_table::{RouteTable, get, post},
    state::AppState,
};

/// The multipart framing around the image: boundaries, part headers, and a
/// client's own small fields, which are refused once read.
const MULTIPART_OVERHEAD_BYTES: usize = 16 * 1024;

/// A stored file never changes (its name is its hash), so it may be cached
/// for a year and never revalidated.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// A served file is an image and nothing else: never sniffed into HTML,
/// never allowed to run anything if opened directly, embeddable from the
/// front end's origin.
const SERVED_FILE_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", "default-src 'none'; sandbox"),
    ("cross-origin-resource-policy", "cross-origin"),
];

/// Where images are posted.
pub const PATH: &str = "/api/uploads";

pub fn routes() -> RouteTable {
    RouteTable::default()
        .route(PATH, post(upload).bounding_its_own_body())
        .route("/api/uploads/{name}", get(serve))
}

#[derive(Serialize)]
struct UploadBody {
    upload: Upload,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Upload {
    url: String,
    content_type: &'static str,
    size: usize,
}

async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let settings = &state.config.uploads;
    state
        .upload_limiter
        .hit("upload", &user.caller.user.to_string(), settings.rate_limit)
        .await
        .map_err(|limited| ApiError::rate_limited(limited.retry_after.as_secs()))?;
    let base = public_base(settings, &request);
    let request = request.map(|body| {
        Body::new(Limited::new(
            body,
            settings.max_bytes + MULTIPART_OVERHEAD_BYTES,
        ))
    });
    let multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "body",
                "must be multipart/form-data with the image as `file`",
            )
        })?;
    let Image { chunks, size } = read_image(multipart, settings.max_bytes).await?;
    let kind = ImageKind::sniff(&first_bytes(&chunks)).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "file",
            "must be a JPEG, PNG, WebP or GIF image",
        )
    })?;
    let name = state
        .images
        .save(chunks, kind)
        .await
        .map_err(store_failed)?;
    let url = format!("{base}/api/uploads/{name}");
    tracing::info!(upload = %name, size, user = %user.caller.user, "image uploaded");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, url.clone())],
        Json(UploadBody {
            upload: Upload {
                url,
                content_type: kind.content_type(),
                size,
            },
        }),
    ))
}

/// An uploaded file as it arrived: kept in its chunks, never copied into
/// one buffer, so an upload holds its own size in memory and no more.
struct Image {
    chunks: Vec<Bytes>,
    size: usize,
}

/// The one part named `file`; anything else in the form is refused rather
/// than ignored, so a client sending the wrong name learns it at once.
async fn read_image(mut multipart: Multipart, max_bytes: usize) -> Result<Image, ApiError> {
    let mut image = None;
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some("file") {
            return Err(ApiError::validation(
                "file",
                "the image is the form's only field, named `file`",
            ));
        }
        if image.is_some() {
            return Err(ApiError::validation("file", "one image per upload"));
        }
        let (mut chunks, mut size) = (Vec::new(), 0);
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            size += chunk.len();
            if size > max_bytes {
                return Err(too_large(max_bytes));
            }
            chunks.push(chunk);
        }
        image = Some(Image { chunks, size });
    }
    match image {
        None => Err(ApiError::validation("file", "is required")),
        Some(Image { size: 0, .. }) => Err(ApiError::validation("file", "is empty")),
        Some(image) => Ok(image),
    }
}

/// Enough of the file's start for [`ImageKind::sniff`], which the first
/// chunk alone may not hold.
fn first_bytes(chunks: &[Bytes]) -> Vec<u8> {
    const SIGNATURE_BYTES: usize = 12;
    chunks
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .take(SIGNATURE_BYTES)
        .collect()
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file",
        format!("must be at most {max_bytes} bytes"),
    )
}

/// A body cut off by the size limit is a 413; any other framing error a 400.
fn malformed(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            "is larger than an upload may be",
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "body",
        format!("is not valid multipart/form-data: {}", error.body_text()),
    )
}

fn store_failed(error: StoreError) -> ApiError {
    tracing::error!(error = %error, "image store failed");
    ApiError::unavailable("uploads")
}

/// Where the API is reached from outside: `GATEWAY_PUBLIC_URL` when set
/// (behind a proxy, the only way to know the scheme), otherwise the host the
/// client addressed. A client that sends a false `Host` only receives a
/// false URL for itself; with neither, the URL is relative to the API.
fn public_base(settings: &UploadsConfig, request: &Request) -> String {
    if let Some(url) = &settings.public_url {
        return url.clone();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<http::uri::Authority>().ok())
        .or_else(|| request.uri().authority().cloned());
    host.map_or_else(String::new, |host| format!("http://{host}"))
}

async fn serve(
    State(state): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = ImageName::parse(&name).ok_or_else(|| ApiError::not_found("upload"))?;
    // Hex digits in quotes: always a header value.
    let etag = HeaderValue::try_from(name.etag()).map_err(|_| ApiError::not_found("upload"))?;
    // The name is the content's hash: a client holding this ETag held the
    // file, so there is nothing to look up.
    if if_none_match(&headers).any(|tag| tag.trim_start_matches("W/") == name.etag()) {
        return Ok(not_modified(etag));
    }
    let missing = || ApiError::not_found("upload");
    // `*` matches only a file that exists (RFC 9110, 13.1.2).
    if if_none_match(&headers).any(|tag| tag == "*") {
        let size = state.images.size(&name).await.map_err(store_failed)?;
        size.ok_or_else(missing)?;
        return Ok(not_modified(etag));
    }
    let (size, body) = if method == Method::HEAD {
        let size = state.images.size(&name).await.map_err(store_failed)?;
        (size.ok_or_else(missing)?, Body::empty())
    } else {
        let found = state.images.fetch(&name).await.map_err(store_failed)?;
        let found = found.ok_or_else(missing)?;
        (found.meta.size, Body::from_stream(found.into_stream()))
    };
    let mut response = body.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(name.kind().content_type()),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    response_headers.insert(header::ETAG, etag);
    response_headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    for (name, value) in SERVED_FILE_HEADERS {
        response_headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

fn not_modified(etag: HeaderValue) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    response
}

/// The tags of `If-None-Match` (repeated headers are one list). RFC 9110
/// compares them weakly: `W/` aside.
fn if_none_match(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_is_a_list_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        headers.append(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(
            if_none_match(&headers).collect::<Vec<_>>(),
            ["\"a\"", "W/\"b\"", "*"]
        );
        assert_eq!(if_none_match(&HeaderMap::new()).count(), 0);
    }

    #[test]
    fn a_signature_split_across_chunks_is_still_read() {
        let chunks = [
            Bytes::from_static(b"\x89P"),
            Bytes::from_static(b"NG\r\n\x1a\n\0\0"),
        ];
        assert_eq!(
            ImageKind::sniff(&first_bytes(&chunks)),
            Some(ImageKind::Png)
        );
    }
}
