//! Image uploads: stored through the object store, sniffed, bounded, served
//! back cacheable, usable as a user's `image`; and the default avatar.

use quill_proto::auth::v1 as auth_pb;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{
    StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};

use crate::support::{Response, TestGateway, errors_for, with_token};

/// A real 1x1 PNG.
const PNG: [u8; 70] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xb0, 0xa9, 0xd8, 0xf2,
    0x1f, 0x00, 0x04, 0xc4, 0x02, 0x68, 0x78, 0x10, 0xb5, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A real 1x1 GIF.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\
    \x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// A name as the gateway writes them, of nothing uploaded.
const UNKNOWN_NAME: &str = "3ea2ad4d5a9d7f8f8b3d0e6b5c2e0e8a0b2fb1d4e7c6a9d8f1e2b3c4d5e6f7a8.png";

fn file(bytes: impl Into<Vec<u8>>, declared_type: &str) -> Form {
    let part = Part::bytes(bytes.into())
        .file_name("picture")
        .mime_str(declared_type)
        .expect("a content type");
    Form::new().part("file", part)
}

async fn upload(gw: &TestGateway, token: Option<&str>, form: Form) -> Response {
    let mut request = gw.http.post(gw.url("/api/uploads")).multipart(form);
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    gw.send(request).await
}

/// A body written by hand, framed by the boundary `XyZ`.
async fn upload_raw(gw: &TestGateway, token: &str, body: impl Into<reqwest::Body>) -> Response {
    gw.send(
        gw.http
            .post(gw.url("/api/uploads"))
            .header("authorization", format!("Token {token}"))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body),
    )
    .await
}

fn url_of(uploaded: &Response) -> String {
    uploaded.body["upload"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {:?}", uploaded.body))
        .to_owned()
}

/// Refused with `status`, naming the `file` field.
fn assert_refused(response: &Response, status: StatusCode) {
    assert_eq!(response.status, status, "{:?}", response.body);
    assert!(
        !errors_for(&response.body, "file").is_empty(),
        "{:?}",
        response.body
    );
}

/// What the store holds, by name.
fn stored(gw: &TestGateway) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(gw.uploads.path())
        .expect("the upload directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_uploaded_avatar_is_served_back_cacheable_and_becomes_the_users_image() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;

    // Declared as something else: the bytes decide.
    let uploaded = upload(
        &gw,
        Some(&jake.token),
        file(PNG, "application/octet-stream"),
    )
    .await;

    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let url = url_of(&uploaded);
    let name = url.rsplit('/').next().expect("a name").to_owned();
    assert_eq!(url, gw.url(&format!("/api/uploads/{name}")));
    assert!(name.ends_with(".png") && name.len() == 64 + 4, "{name}");
    assert_eq!(uploaded.headers["location"], url.as_str());
    assert_eq!(uploaded.body["upload"]["contentType"], "image/png");
    assert_eq!(uploaded.body["upload"]["size"], PNG.len());
    assert_eq!(stored(&gw), std::slice::from_ref(&name));

    let head = gw.http.head(&url).send().await.expect("request");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        PNG.len().to_string().as_str()
    );
    assert_eq!(head.headers()["content-type"], "image/png");

    let served = gw.http.get(&url).send().await.expect("request");
    assert_eq!(served.status(), StatusCode::OK);
    let headers = served.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], PNG.len().to_string().as_str());
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.expect("bytes").as_ref(), PNG);

    let etag = headers["etag"].to_str().expect("an ETag").to_owned();
    let revalidated = gw
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.expect("bytes").is_empty());
    let any = gw.http.get(&url).header("if-none-match", "*").send().await;
    assert_eq!(any.expect("request").status(), StatusCode::NOT_MODIFIED);

    // The same image again is the same file.
    let again = upload(&gw, Some(&jake.token), file(PNG, "image/png")).await;
    assert_eq!(url_of(&again), url);
    assert_eq!(stored(&gw).len(), 1);

    let saved = gw.put_user(&jake.token, json!({ "image": url })).await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    assert_eq!(saved.body["user"]["image"], url.as_str());
    let profile = gw.get("/api/profiles/jake", None).await;
    assert_eq!(profile.body["profile"]["image"], url.as_str());
}

#[tokio::test]
async fn every_accepted_format_is_stored_with_its_type() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jpeg = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xD9";
    let webp = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00";

    for (bytes, extension, content_type) in [
        (&jpeg[..], "jpg", "image/jpeg"),
        (webp, "webp", "image/webp"),
        (GIF, "gif", "image/gif"),
    ] {
        let uploaded = upload(&gw, Some(&jake.token), file(bytes, "image/png")).await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
        assert_eq!(uploaded.body["upload"]["contentType"], content_type);
        let url = url_of(&uploaded);
        assert!(url.ends_with(&format!(".{extension}")), "{url}");
        let served = gw.http.get(&url).send().await.expect("request");
        assert_eq!(served.headers()["content-type"], content_type);
        assert_eq!(served.bytes().await.expect("bytes").as_ref(), bytes);
    }
}

#[tokio::test]
async fn what_is_not_an_accepted_image_is_refused_and_not_stored() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;

    for (bytes, declared) in [
        (svg.as_bytes(), "image/svg+xml"),
        (
            b"<!DOCTYPE html><script>alert(1)</script>".as_slice(),
            "image/png",
        ),
        (b"\x89PNG".as_slice(), "image/png"),
    ] {
        let refused = upload(&gw, Some(&jake.token), file(bytes, declared)).await;
        assert_refused(&refused, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    assert!(stored(&gw).is_empty());
}

#[tokio::test]
async fn an_image_over_the_limit_is_a_413_however_it_is_sent() {
    let gw = TestGateway::start_with(|c| c.uploads.max_bytes = 1024).await;
    let jake = gw.register("jake").await;
    let mut at_limit = PNG.to_vec();
    at_limit.resize(1024, 0);
    let mut over = at_limit.clone();
    over.push(0);

    let accepted = upload(&gw, Some(&jake.token), file(at_limit, "image/png")).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);

    let refused = upload(&gw, Some(&jake.token), file(over, "image/png")).await;
    assert_refused(&refused, StatusCode::PAYLOAD_TOO_LARGE);

    // Far larger than the limit and the router's body limit: cut off while
    // it streams, not read whole.
    let mut huge = PNG.to_vec();
    huge.resize(8 * 1024 * 1024, 0);
    let refused = upload(&gw, Some(&jake.token), file(huge, "image/png")).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        refused.body
    );

    // Bytes outside the file count too: a preamble as long as the limit and
    // its framing allowance is cut off before any part begins.
    let preamble = "x".repeat(1024 + 16 * 1024 + 1);
    let framed = upload_raw(
        &gw,
        &jake.token,
        format!(
            "{preamble}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--XyZ--\r\n"
        ),
    )
    .await;
    assert_eq!(
        framed.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        framed.body
    );
    assert_eq!(stored(&gw).len(), 1);
}

/// Uploads have their own limit: the router-wide one, for JSON bodies,
/// does not cut them short.
#[tokio::test]
async fn an_upload_may_be_larger_than_other_bodies() {
    let gw = TestGateway::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    let jake = gw.register("jake").await;
    let mut image = PNG.to_vec();
    image.resize(128 * 1024, 0);

    let uploaded = upload(&gw, Some(&jake.token), file(image, "image/png")).await;

    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    assert_eq!(uploaded.body["upload"]["size"], 128 * 1024);
}

/// A slow link: the body arrives in pieces over longer than other requests
/// may take, and within the upload's own deadline.
#[tokio::test]
async fn an_upload_has_a_deadline_of_its_own() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    // Other requests may take 1.2 s here; uploads 30 s.
    let patient = gw
        .another_gateway(|c| {
            c.rpc_deadline = Duration::from_millis(100);
            c.uploads.timeout = Duration::from_secs(30);
        })
        .await;
    let slowly = |base: &str, pause: Duration| {
        let head = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n";
        let pieces: Vec<Vec<u8>> = vec![
            [head.as_bytes(), &PNG[..8]].concat(),
            PNG[8..].to_vec(),
            b"\r\n--XyZ--\r\n".to_vec(),
        ];
        let stream = futures::stream::iter(pieces).then(move |piece| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, std::io::Error>(piece)
        });
        gw.http
            .post(format!("{base}/api/uploads"))
            .header("authorization", format!("Token {}", jake.token))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(reqwest::Body::wrap_stream(stream))
    };

    // Three pauses of 600 ms: past what any other request may take.
    let uploaded = gw
        .send(slowly(&patient.base, Duration::from_millis(600)))
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);

    let impatient = gw
        .another_gateway(|c| c.uploads.timeout = Duration::from_millis(500))
        .await;
    let timed_out = gw
        .send(slowly(&impatient.base, Duration::from_millis(400)))
        .await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn malformed_uploads_are_4xx_naming_what_is_wrong() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let token = Some(jake.token.as_str());

    let anonymous = upload(&gw, None, file(PNG, "image/png")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers.contains_key("www-authenticate"));

    let json_body = gw.post("/api/uploads", token, json!({"file": "x"})).await;
    assert_eq!(
        json_body.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{:?}",
        json_body.body
    );

    let no_file = upload_raw(&gw, &jake.token, "--XyZ--\r\n").await;
    assert_eq!(
        no_file.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        no_file.body
    );
    assert_eq!(errors_for(&no_file.body, "file"), ["is required"]);

    let misnamed = Form::new().part("avatar", Part::bytes(PNG.to_vec()));
    let misnamed = upload(&gw, token, misnamed).await;
    assert_eq!(
        misnamed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        misnamed.body
    );

    let two = file(PNG, "image/png").part("file", Part::bytes(GIF.to_vec()));
    let two = upload(&gw, token, two).await;
    assert_eq!(
        two.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        two.body
    );

    let empty = upload(&gw, token, file(Vec::new(), "image/png")).await;
    assert_eq!(
        empty.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        empty.body
    );
    assert_eq!(errors_for(&empty.body, "file"), ["is empty"]);

    let truncated = upload_raw(
        &gw,
        &jake.token,
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\u{89}PNG",
    )
    .await;
    assert_eq!(
        truncated.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        truncated.body
    );

    assert!(stored(&gw).is_empty());
}

#[tokio::test]
async fn only_names_the_gateway_wrote_are_served() {
    let gw = TestGateway::start().await;
    std::fs::write(gw.uploads.path().join("notes.txt"), "private").expect("a file");

    for path in [
        "/api/uploads/notes.txt",
        "/api/uploads/..%2Fnotes.txt",
        "/api/uploads/%2e%2e%2fetc%2fpasswd",
        &format!("/api/uploads/{UNKNOWN_NAME}"),
        &format!("/api/uploads/{}", UNKNOWN_NAME.to_uppercase()),
        &format!("/api/uploads/{}", UNKNOWN_NAME.replace(".png", ".svg")),
    ] {
        let response = gw.get(path, None).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{path}: {:?}",
            response.body
        );
    }
    // `*` stands for a file that exists; for no file, it is no match.
    let unknown = gw.url(&format!("/api/uploads/{UNKNOWN_NAME}"));
    for request in [
        gw.http.get(&unknown).header("if-none-match", "*"),
        gw.http.head(&unknown),
    ] {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn uploads_are_rate_limited_per_user() {
    let gw = TestGateway::start_with(|c| c.uploads.rate_limit.limit = 2).await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;

    for _ in 0..2 {
        let uploaded = upload(&gw, Some(&jake.token), file(PNG, "image/png")).await;
        assert_eq!(uploaded.status, StatusCode::CREATED);
    }
    let limited = upload(&gw, Some(&jake.token), file(PNG, "image/png")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));

    let others = upload(&gw, Some(&jane.token), file(PNG, "image/png")).await;
    assert_eq!(others.status, StatusCode::CREATED);
}

#[tokio::test]
async fn behind_a_proxy_the_url_is_the_public_one() {
    let gw =
        TestGateway::start_with(|c| c.uploads.public_url = Some("https://api.example.com".into()))
            .await;
    let jake = gw.register("jake").await;

    let uploaded = upload(&gw, Some(&jake.token), file(PNG, "image/png")).await;

    let url = url_of(&uploaded);
    assert!(
        url.starts_with("https://api.example.com/api/uploads/"),
        "{url}"
    );
}

/// The raw image auth stores for the token's user.
async fn stored_image(gw: &TestGateway, token: &str) -> Option<String> {
    gw.auth
        .client()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, token))
        .await
        .expect("the current user")
        .into_inner()
        .image
}

#[tokio::test]
async fn users_without_an_image_show_the_default_avatar_and_posting_it_back_stores_nothing() {
    const DEFAULT: &str = "https://cdn.example.com/default-avatar.png";
    let gw = TestGateway::start_with(|c| c.uploads.default_avatar = Some(DEFAULT.into())).await;
    let jake = gw.register("jake").await;
    let article = gw.article(&jake, "Dragons", &[]).await;
    let slug = article["slug"].as_str().expect("a slug");

    let user = gw.get("/api/user", Some(&jake.token)).await.body["user"].clone();
    assert_eq!(user["image"], DEFAULT);
    let shown: [Value; 3] = [
        gw.get("/api/profiles/jake", None).await.body["profile"]["image"].clone(),
        gw.get(&format!("/api/articles/{slug}"), None).await.body["article"]["author"]["image"]
            .clone(),
        gw.get("/api/articles", None).await.body["articles"][0]["author"]["image"].clone(),
    ];
    assert_eq!(shown, [json!(DEFAULT), json!(DEFAULT), json!(DEFAULT)]);

    // The settings page posts back what it was shown, default included.
    let mut posted = user.clone();
    posted["bio"] = json!("I like dragons");
    let saved = gw.put_user(&jake.token, posted).await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    assert_eq!(saved.body["user"]["image"], DEFAULT);
    assert_eq!(stored_image(&gw, &jake.token).await, None);

    let own = "https://images.example.com/jake.png";
    gw.put_user(&jake.token, json!({ "image": own })).await;
    assert_eq!(
        gw.get("/api/profiles/jake", None).await.body["profile"]["image"],
        own
    );
    // Choosing the default again is having no image of one's own.
    gw.put_user(&jake.token, json!({ "image": format!(" {DEFAULT} ") }))
        .await;
    assert_eq!(stored_image(&gw, &jake.token).await, None);
    assert_eq!(
        gw.get("/api/profiles/jake", None).await.body["profile"]["image"],
        DEFAULT
    );
}

#[tokio::test]
async fn without_a_default_avatar_image_stays_null_as_realworld_has_it() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;

    let user = gw.get("/api/user", Some(&jake.token)).await;

    assert_eq!(user.body["user"]["image"], Value::Null);
}

/// moto's S3-compatible server on a port of its own, stopped with the test
/// (`QUILL_S3_SERVER`, set by `just test`: `scripts/s3-server.sh` installs it).
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start() -> Self {
        let program = std::env::var("QUILL_S3_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = std::process::Command::new(&program);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        crate::processes_support::system::die_with_parent(&mut command);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("{program}: {e}; `scripts/s3-server.sh` installs it (`just test` does)")
        });
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the S3 server did not start on port {port}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn images_go_to_an_s3_compatible_store_named_by_url() {
    let s3 = S3Server::start().await;
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{}/quill-uploads", s3.endpoint))
        .send()
        .await
        .expect("create the bucket");
    assert!(created.status().is_success(), "{created:?}");
    let options: Vec<(String, String)> = [
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "quill-test"),
        ("aws_secret_access_key", "quill-test-secret"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let gw = TestGateway::start_with(|c| {
        c.uploads.location = "s3://quill-uploads/images".into();
        c.uploads.store_options = quill_gateway::images::StoreOptions(options);
    })
    .await;
    let jake = gw.register("jake").await;

    let uploaded = upload(&gw, Some(&jake.token), file(PNG, "image/png")).await;

    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let url = url_of(&uploaded);
    let name = url.rsplit('/').next().expect("a name");
    let listing = http
        .get(format!("{}/quill-uploads?list-type=2", s3.endpoint))
        .send()
        .await
        .expect("list the bucket")
        .text()
        .await
        .expect("a listing");
    assert!(
        listing.contains(&format!("<Key>images/{name}</Key>")),
        "{listing}"
    );
    assert!(stored(&gw).is_empty(), "nothing on the local disk");
    let served = gw.http.get(&url).send().await.expect("request");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.expect("bytes").as_ref(), PNG);
    let unknown = gw.get(&format!("/api/uploads/{UNKNOWN_NAME}"), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}
