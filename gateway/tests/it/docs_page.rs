//! `/api/docs` as a reader sees it in a browser: the OpenAPI descriptions
//! rendered from their Markdown (safely: the page's renderer builds nodes and
//! links only to http(s) or relative URLs), and each operation's example
//! request sent from the page with the Authorization value given once, at the
//! top.

use serde_json::{Value, json};

use crate::{browser::Browser, support::TestGateway};

#[tokio::test]
async fn descriptions_read_as_rendered_markdown() {
    let gw = TestGateway::start().await;
    let browser = Browser::start().await;

    browser.open(&gw.url("/api/docs")).await;

    assert_eq!(browser.text("#intro p strong").await, "Authentication.");
    let intro = browser.text("#intro").await;
    assert!(intro.starts_with("Quill's REST surface"), "{intro}");
    assert!(!intro.contains("**") && !intro.contains('`'), "{intro}");
    // A code span may run over a line break of the YAML.
    let codes = browser
        .eval(
            "return [...document.querySelectorAll('#intro code')].map(c => c.textContent)",
            json!([]),
        )
        .await;
    let codes: Vec<&str> = codes
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(codes.contains(&"Token <jwt>"), "{codes:?}");
    assert!(
        codes.contains(&r#"RateLimit-Policy: "writes:user";q=30;w=60"#),
        "{codes:?}"
    );

    // An operation's descriptions, once it is opened.
    browser.click("#UpdateCurrentUser > summary").await;
    assert_eq!(browser.text("#UpdateCurrentUser .md strong").await, "one");
    let body = browser.text("#UpdateCurrentUser form").await;
    assert!(
        body.contains("User details to update. At least one field is required."),
        "{body}"
    );
}

#[tokio::test]
async fn the_renderer_makes_markup_only_of_markdown() {
    let gw = TestGateway::start().await;
    let browser = Browser::start().await;
    browser.open(&gw.url("/api/docs")).await;

    assert_eq!(
        rendered(
            &browser,
            "<img src=x onerror=alert(1)> `<b>` a_b_c \\*not emphasis\\*"
        )
        .await,
        "<p>&lt;img src=x onerror=alert(1)&gt; <code>&lt;b&gt;</code> a_b_c *not emphasis*</p>"
    );
    assert_eq!(
        rendered(&browser, "[docs](/api/docs) [x](javascript:alert) [y](JavaScript:alert) [z](data:text/html,hi) [w](https://example.com/)").await,
        "<p><a href=\"/api/docs\">docs</a> x y z <a href=\"https://example.com/\">w</a></p>"
    );
    assert_eq!(
        rendered(&browser, "Two\nlines, *one* **paragraph**.\n\n- a `code\nspan`\n- b\n\n```\n<pre>\n```\n\n    indented").await,
        "<p>Two\nlines, <em>one</em> <strong>paragraph</strong>.</p>\
         <ul><li>a <code>code span</code></li><li>b</li></ul>\
         <pre><code>&lt;pre&gt;</code></pre><pre><code>indented</code></pre>"
    );
}

#[tokio::test]
async fn an_example_request_runs_from_the_page_with_the_token_given_at_the_top() {
    let gw = TestGateway::start().await;
    let browser = Browser::start().await;
    browser.open(&gw.url("/api/docs")).await;

    // Registration's example body, sent as it stands.
    browser.click("#CreateUser > summary").await;
    let (status, registered) = send(&browser, "CreateUser").await;
    assert!(status.starts_with("201"), "{status}: {registered}");
    let registered: Value = serde_json::from_str(&registered).expect("the answer, as JSON");
    assert_eq!(registered["user"]["username"], "jake");
    let token = registered["user"]["token"].as_str().expect("a token");

    browser.click("#GetCurrentUser > summary").await;
    let (status, _) = send(&browser, "GetCurrentUser").await;
    assert!(status.starts_with("401"), "{status}");

    browser.type_into("#token", &format!("Token {token}")).await;
    let (status, current) = send(&browser, "GetCurrentUser").await;
    assert!(status.starts_with("200"), "{status}: {current}");
    let current: Value = serde_json::from_str(&current).expect("the answer, as JSON");
    assert_eq!(current["user"]["username"], "jake");
    assert!(
        browser
            .text("#GetCurrentUser .result")
            .await
            .contains("with Authorization")
    );
}

/// The markup the page's renderer makes of `source`.
async fn rendered(browser: &Browser, source: &str) -> String {
    let html = browser
        .eval(
            "const box = document.createElement('div');
             box.append(...markdown(arguments[0]));
             return box.innerHTML;",
            json!([source]),
        )
        .await;
    html.as_str().expect("a string").to_owned()
}

/// Presses the operation's Send button and waits for the answer the page
/// shows: its status line and its body.
async fn send(browser: &Browser, operation: &str) -> (String, String) {
    browser
        .click(&format!("#{operation} button[type=submit]"))
        .await;
    let shown = browser
        .wait_for(
            &format!("the answer to {operation}"),
            "const result = document.querySelector(`#${arguments[0]} .result`);
             const status = result.querySelector('.status');
             const body = result.querySelector('.response-body');
             return status && body && body.textContent ? [status.textContent, body.textContent] : null;",
            json!([operation]),
        )
        .await;
    (
        shown[0].as_str().expect("status").to_owned(),
        shown[1].as_str().expect("body").to_owned(),
    )
}
