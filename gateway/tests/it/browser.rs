//! Headless Chromium, driven over the W3C WebDriver protocol through
//! Debian's `chromedriver`, for tests of what a reader of a page sees. The
//! protocol is a handful of JSON requests, so reqwest speaks it; no client
//! crate. CI installs both (`.ci/run`); a machine without them fails the
//! test, saying how to install them, rather than skipping it.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::{Instant, sleep, timeout},
};

/// How long a page may take to show what a test waits for.
/// Generous: nextest runs these beside every other test on two cores.
const PATIENCE: Duration = Duration::from_secs(30);

/// Without the background-networking flags, Chromium keeps trying to reach
/// Google's services, which a closed network turns into stalls.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
];

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser with one window. Dropping it ends the browser and its driver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    /// The browser's main process: its renderers and helpers exit with it.
    /// The driver does not end it when killed, so this does.
    browser_pid: Option<i32>,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element of the page, as WebDriver refers to it.
struct Element(String);

impl Browser {
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            // Chromium's singleton socket directory goes to $TMPDIR and
            // outlives a killed browser: inside the profile, it goes with it.
            .env("TMPDIR", profile.path())
            .stdout(Stdio::piped())
            // Shown with a failing test's output.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver ({e}): this test drives headless Chromium; \
                     install it with `sudo apt-get install -y chromium chromium-driver` \
                     (`just doctor` lists what the tests need)"
                )
            });
        let mut lines = BufReader::new(driver.stdout.take().expect("piped stdout")).lines();
        let port = timeout(PATIENCE, async {
            let mut said = Vec::new();
            while let Some(line) = lines.next_line().await.expect("chromedriver's output") {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                {
                    return port;
                }
                said.push(line);
            }
            panic!("chromedriver exited before it listened: {said:?}");
        })
        .await
        .expect("chromedriver listens within 10 s");
        // Whatever the driver prints later must not fill the pipe and stall it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let http = reqwest::Client::new();
        let created = command(
            &http,
            reqwest::Method::POST,
            &format!("http://127.0.0.1:{port}/session"),
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"args": args},
            }}}),
        )
        .await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"));
        let browser = Self {
            http,
            session: format!("http://127.0.0.1:{port}/session/{id}"),
            browser_pid: created["capabilities"]["goog:processID"]
                .as_i64()
                .and_then(|pid| i32::try_from(pid).ok()),
            driver,
            _profile: profile,
        };
        // `find` waits this long for an element to appear.
        browser
            .post("/timeouts", json!({"implicit": PATIENCE.as_millis()}))
            .await;
        browser
    }

    pub async fn open(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The first element `css` selects, waiting for it to appear.
    async fn find(&self, css: &str) -> Element {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        Element(
            found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("{css}: {found}"))
                .to_owned(),
        )
    }

    /// Clicks as a reader does: the element must be visible and not covered.
    /// It is scrolled to the middle of the window first, as a reader would:
    /// WebDriver scrolls only an element whose middle is out of view, which
    /// leaves one just below the top under the page's sticky header.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.eval(
            "arguments[0].scrollIntoView({block: 'center'})",
            json!([{ ELEMENT: element.0 }]),
        )
        .await;
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Replaces what the field holds with `text`, typed key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// The text a reader sees in the element (hidden parts left out).
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self.get(&format!("/element/{}/text", element.0)).await;
        text.as_str().expect("text").to_owned()
    }

    /// Runs `script` as a function body in the page (`arguments` holds
    /// `args`) and returns what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs `script` until it returns something other than null, false or
    /// undefined, and returns that; panics naming `what` after 10 s.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(script, args.clone()).await;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            assert!(Instant::now() < deadline, "waited 10 s for {what}");
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        command(&self.http, reqwest::Method::POST, &url, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.session);
        command(&self.http, reqwest::Method::GET, &url, Value::Null).await
    }
}

/// One WebDriver command; its `value`, or a panic with the driver's error.
async fn command(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Value) -> Value {
    let mut request = http.request(method, url);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.expect("chromedriver answers");
    let status = response.status();
    let answer: Value = response.json().await.expect("a WebDriver answer is JSON");
    assert!(status.is_success(), "{url}: {status} {answer}");
    answer["value"].clone()
}

/// `DELETE` on the WebDriver session, blocking: the driver closes the
/// browser and waits for it, so no process is left writing into the
/// profile directory as it is removed.
fn end_session(session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let rest = session.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(stream, "DELETE /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    stream.read_to_end(&mut Vec::new())?;
    Ok(())
}

impl Drop for Browser {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let _ = end_session(&self.session);
        if let Some(pid) = self.browser_pid {
            // SAFETY: plain kill(2); the pid is a child of the driver, which
            // is still running, so it has not been reaped and reused.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.start_kill();
    }
}
