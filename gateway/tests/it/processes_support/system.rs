//! Quill as it runs in production: the four real binaries, each its own
//! process on free loopback ports, configured only through the environment.
//! Each service gets its own database; all share one Redis key prefix and
//! one exchange and queue prefix of their own, and export spans to the
//! test's OTLP receiver. Everything is torn down on drop, also when an
//! assertion fails: processes get SIGTERM (SIGKILL if they do not drain),
//! then the databases, keys, exchanges and queues are deleted.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use quill_events::{EventsConfig, catalog, testing::TestBroker};
use quill_platform::testing::TestRedis;
use quill_server::testing::TestDb;

/// The processes behind the gateway, each with a database and an admin port.
pub const SERVICES: [&str; 3] = ["auth", "content", "notification"];

const START_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

type Lines = Arc<Mutex<Vec<String>>>;

struct Process {
    name: &'static str,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    exit: Option<ExitStatus>,
}

pub struct System {
    processes: Vec<Process>,
    /// The gateway's REST address.
    pub gateway: SocketAddr,
    /// Each process's admin `/metrics` address (the gateway's included).
    admin: BTreeMap<&'static str, SocketAddr>,
    pub exchange: String,
    pub queue_prefix: String,
    pub http: reqwest::Client,
    databases: BTreeMap<&'static str, TestDb>,
    // Dropped after the processes are gone (fields drop after `Drop::drop`).
    _redis: TestRedis,
    _broker: TestBroker,
}

/// Why a start attempt failed.
enum StartError {
    /// A port was taken between choosing and binding it: try other ports.
    PortTaken(String),
    Failed(String),
}

impl System {
    /// Starts all four processes and waits until the gateway reports ready.
    pub async fn start(otlp_endpoint: &str) -> Self {
        let binaries = binaries();
        let databases: BTreeMap<_, _> = SERVICES
            .iter()
            .map(|s| (*s, TestDb::new(&format!("quill_{s}"))))
            .collect();
        let redis = TestRedis::new();
        let broker = TestBroker::new();
        // The queues every relay and consumer will declare, so the broker's
        // drop deletes them along with the exchange.
        let events = EventsConfig {
            exchange: broker.exchange(),
            ..EventsConfig::default()
        };
        for topology in catalog::all(&events, &broker.prefix) {
            broker.track(topology);
        }
        let mut system = Self {
            processes: Vec::new(),
            gateway: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: BTreeMap::new(),
            exchange: broker.exchange(),
            queue_prefix: broker.prefix.clone(),
            http: reqwest::Client::new(),
            databases,
            _redis: redis,
            _broker: broker,
        };
        for attempt in 1.. {
            match system.launch(&binaries, otlp_endpoint).await {
                Ok(()) => return system,
                Err(StartError::PortTaken(output)) if attempt < 3 => {
                    eprintln!("a chosen port was taken, starting again:\n{output}");
                    system.stop();
                    system.processes.clear();
                }
                Err(StartError::PortTaken(output) | StartError::Failed(output)) => {
                    panic!("the system did not start:\n{output}")
                }
            }
        }
        unreachable!()
    }

    async fn launch(
        &mut self,
        binaries: &[(&'static str, PathBuf)],
        otlp: &str,
    ) -> Result<(), StartError> {
        let ports = free_ports(5 + SERVICES.len());
        let listen = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
        let (auth, content, notification, gateway) = (listen(0), listen(1), listen(2), listen(3));
        self.gateway = gateway;
        self.admin = SERVICES
            .iter()
            .chain(&["gateway"])
            .enumerate()
            .map(|(i, s)| (*s, listen(4 + i)))
            .collect();
        let db = |s: &str| self.databases[s].url.clone();
        let common: Vec<(&str, String)> = vec![
            ("RUST_LOG", "info".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("DEPLOYMENT_ENVIRONMENT", "test".into()),
            ("AUTH_LISTEN", auth.to_string()),
            ("CONTENT_LISTEN", content.to_string()),
            ("NOTIFICATION_LISTEN", notification.to_string()),
            ("GATEWAY_LISTEN", gateway.to_string()),
            ("AUTH_URL", format!("http://{auth}")),
            ("CONTENT_URL", format!("http://{content}")),
            ("NOTIFICATION_URL", format!("http://{notification}")),
            ("AUTH_DATABASE_URL", db("auth")),
            ("CONTENT_DATABASE_URL", db("content")),
            ("NOTIFICATION_DATABASE_URL", db("notification")),
            (
                "CONTENT_CURSOR_SECRET",
                "processes-test-cursor-secret".into(),
            ),
            ("REDIS_URL", self._redis.url.clone()),
            ("REDIS_PREFIX", self._redis.prefix.clone()),
            (
                "SERVICE_TOKEN_SECRET",
                "processes-test-service-secret-of-32-bytes-or-more".into(),
            ),
            ("AMQP_URL", self._broker.url.clone()),
            ("EVENTS_EXCHANGE", self.exchange.clone()),
            ("EVENTS_QUEUE_PREFIX", self.queue_prefix.clone()),
        ];
        for (name, path) in binaries {
            let mut command = Command::new(path);
            // Only what is set here: nothing from the developer's shell
            // (a stray OTEL_SERVICE_NAME or AMQP_URL) leaks in.
            command
                .env_clear()
                .envs(common.iter().map(|(k, v)| (*k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(admin) = self.admin.get(name) {
                let setting = match *name {
                    "gateway" => "GATEWAY_METRICS_LISTEN",
                    _ => "METRICS_LISTEN",
                };
                command.env(setting, admin.to_string());
            }
            die_with_parent(&mut command);
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
            let stdout = collect(child.stdout.take().expect("piped stdout"));
            let stderr = collect(child.stderr.take().expect("piped stderr"));
            self.processes.push(Process {
                name,
                child,
                stdout,
                stderr,
                exit: None,
            });
        }
        self.wait_until_ready().await
    }

    async fn wait_until_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut exited = None;
            for process in &mut self.processes {
                if let Ok(Some(status)) = process.child.try_wait() {
                    process.exit = Some(status);
                    exited = Some((process.name, status));
                    break;
                }
            }
            if let Some((name, status)) = exited {
                // Let the reader threads catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let output = self.output(80);
                let message = format!("quill-{name} exited early ({status}):\n{output}");
                return Err(if output.contains("Address already in use") {
                    StartError::PortTaken(message)
                } else {
                    StartError::Failed(message)
                });
            }
            if self.is_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Failed(format!(
                    "not ready within {START_TIMEOUT:?}:\n{}",
                    self.output(80)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn is_ready(&self) -> bool {
        let ok = |url: String| async move {
            self.http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        };
        if !ok(format!("http://{}/readyz", self.gateway)).await {
            return false;
        }
        for admin in self.admin.values() {
            if !ok(format!("http://{admin}/metrics")).await {
                return false;
            }
        }
        true
    }

    /// The queue `service` consumes (`<prefix>.<service>`).
    pub fn queue(&self, service: &str) -> String {
        catalog::queue_name(&self.queue_prefix, service)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// The database `service` was given (its name is the `db` metric label).
    pub fn database(&self, service: &str) -> String {
        let url = &self.databases[service].url;
        url.rsplit_once('/')
            .map_or(url.as_str(), |(_, name)| name)
            .to_owned()
    }

    /// One scrape of `process`'s admin port (`gateway` or a service).
    pub async fn scrape(&self, process: &str) -> String {
        let url = format!("http://{}/metrics", self.admin[process]);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
        assert_eq!(response.status(), 200, "scraping {url}");
        response.text().await.expect("metrics body")
    }

    /// What `process` has written to stdout so far, line by line.
    pub fn stdout(&self, process: &str) -> Vec<String> {
        self.processes
            .iter()
            .find(|p| p.name == process)
            .map(|p| p.stdout.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Sends SIGTERM to every process still running and waits for each to
    /// drain (SIGKILL after [`DRAIN_TIMEOUT`]); returns how each one exited
    /// (`None`: it had to be killed).
    pub fn stop(&mut self) -> Vec<(&'static str, Option<ExitStatus>)> {
        for process in &mut self.processes {
            if process.exit.is_none() && matches!(process.child.try_wait(), Ok(None)) {
                terminate(&process.child);
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        self.processes
            .iter_mut()
            .map(|process| {
                if process.exit.is_none() {
                    process.exit = loop {
                        match process.child.try_wait() {
                            Ok(Some(status)) => break Some(status),
                            Ok(None) if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            _ => {
                                let _ = process.child.kill();
                                let _ = process.child.wait();
                                break None;
                            }
                        }
                    };
                }
                (process.name, process.exit)
            })
            .collect()
    }

    /// The last `lines` lines of every process's stdout and stderr.
    fn output(&self, lines: usize) -> String {
        let mut out = String::new();
        for process in &self.processes {
            for (stream, buffer) in [("stdout", &process.stdout), ("stderr", &process.stderr)] {
                let buffer = buffer.lock().unwrap();
                if buffer.is_empty() {
                    continue;
                }
                out.push_str(&format!(
                    "--- quill-{} {stream} (last {lines} lines)\n",
                    process.name
                ));
                for line in &buffer[buffer.len().saturating_sub(lines)..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let outcome = self.stop();
        if std::thread::panicking() {
            eprintln!("{outcome:?}\n{}", self.output(40));
        }
        // One at a time, each DROP DATABASE waits for a checkpoint of its
        // own (about a second); together they share one.
        let databases = std::mem::take(&mut self.databases);
        std::thread::scope(|scope| {
            for (_, db) in databases {
                scope.spawn(move || drop(db));
            }
        });
    }
}

/// The four binaries: the gateway's as Cargo built it for this test, the
/// services' from the same directory (`cargo build --workspace --bins`).
fn binaries() -> Vec<(&'static str, PathBuf)> {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_quill-gateway"));
    let dir = gateway.parent().expect("binary directory").to_owned();
    let mut binaries: Vec<(&'static str, PathBuf)> = SERVICES
        .iter()
        .map(|s| {
            (
                *s,
                dir.join(format!("quill-{s}{}", std::env::consts::EXE_SUFFIX)),
            )
        })
        .collect();
    binaries.push(("gateway", gateway));
    for (_, path) in &binaries {
        assert!(
            Path::new(path).is_file(),
            "{} is missing: this test runs the real binaries; build them first with \
             `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    binaries
}

/// `n` distinct loopback ports free right now, below the kernel's
/// ephemeral range (which port-0 listeners of parallel tests and outgoing
/// connections draw from, so they cannot take them while we start).
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if !ports.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// Reads a child's output line by line into a shared buffer.
fn collect(stream: impl Read + Send + 'static) -> Lines {
    let lines = Lines::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

#[allow(unsafe_code)]
fn terminate(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A backstop for when the test process itself dies (a timeout's SIGKILL)
/// and no destructor runs: the kernel kills the children too. The signal
/// follows the spawning thread, so start the system from the test's own
/// task (which `block_on` keeps on the test thread), not a spawned one.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
