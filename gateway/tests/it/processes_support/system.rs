//! Quill as it runs in production: the four real binaries, each its own
//! process on free loopback ports, configured only through the environment.
//! Each service gets its own database (shared by its replicas); all share
//! one Redis key prefix and one exchange and queue prefix of their own, and
//! export spans to the test's OTLP receiver. A [`Topology`] may ask for
//! several replicas of each service and several gateways: callers then get
//! every replica's URL in one comma-separated list, as `just up-replicas`
//! runs them. Everything is torn down on drop, also when an assertion
//! fails: processes get SIGTERM (SIGKILL if they do not drain), then the
//! databases, keys, exchanges and queues are deleted.

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
const GATEWAY: &str = "gateway";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// An Ed25519 key for this test's tokens only.
const TEST_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKb0Ay9oPk7WpHmVOSH9BH/02oANDSakbugL/1jzdN3g
-----END PRIVATE KEY-----
";

type Lines = Arc<Mutex<Vec<String>>>;

/// How many of each process to run, and settings on top of the defaults.
pub struct Topology {
    /// Replicas of each service.
    pub replicas: usize,
    pub gateways: usize,
    /// Extra environment for every process.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            replicas: 1,
            gateways: 1,
            env: Vec::new(),
        }
    }
}

/// One process: what it runs and with which environment, so it can be
/// started again after it was stopped or killed.
struct Process {
    /// `content` for the first replica, `content-2` for the second, ...
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    exit: Option<ExitStatus>,
}

impl Process {
    fn spawn(name: String, binary: PathBuf, env: Vec<(String, String)>) -> Self {
        let (child, stdout, stderr) = spawn(&binary, &env, Lines::default(), Lines::default());
        Self {
            name,
            binary,
            env,
            child,
            stdout,
            stderr,
            exit: None,
        }
    }

    fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to [`DRAIN_TIMEOUT`] for the process to exit, then kills it;
    /// `None`: it had to be killed.
    fn wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        self.exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        self.exit
    }
}

pub struct System {
    processes: Vec<Process>,
    /// The first gateway's REST address.
    pub gateway: SocketAddr,
    /// Every gateway's REST address.
    pub gateways: Vec<SocketAddr>,
    /// Each process's admin `/metrics` address, by process name.
    admin: BTreeMap<String, SocketAddr>,
    pub exchange: String,
    pub queue_prefix: String,
    pub http: reqwest::Client,
    databases: BTreeMap<&'static str, TestDb>,
    // Dropped after the processes are gone (fields drop after `Drop::drop`).
    _redis: TestRedis,
    _broker: TestBroker,
    /// The gateways' image store, shared as replicas must share it.
    uploads: tempfile::TempDir,
}

/// Why a start attempt failed.
enum StartError {
    /// A port was taken between choosing and binding it: try other ports.
    PortTaken(String),
    Failed(String),
}

/// The name of replica `index` (from 1) of `service`.
pub fn replica(service: &str, index: usize) -> String {
    match index {
        1 => service.to_owned(),
        n => format!("{service}-{n}"),
    }
}

impl System {
    /// Starts all four processes and waits until the gateway reports ready.
    pub async fn start(otlp_endpoint: &str) -> Self {
        Self::start_with(otlp_endpoint, Topology::default()).await
    }

    /// Starts `topology` and waits until every gateway reports ready and
    /// every process serves its metrics.
    pub async fn start_with(otlp_endpoint: &str, topology: Topology) -> Self {
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
            gateways: Vec::new(),
            admin: BTreeMap::new(),
            exchange: broker.exchange(),
            queue_prefix: broker.prefix.clone(),
            http: reqwest::Client::new(),
            databases,
            _redis: redis,
            _broker: broker,
            uploads: tempfile::tempdir().expect("an upload directory"),
        };
        for attempt in 1.. {
            match system.launch(&binaries, otlp_endpoint, &topology).await {
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
        binaries: &BTreeMap<&'static str, PathBuf>,
        otlp: &str,
        topology: &Topology,
    ) -> Result<(), StartError> {
        let counts: Vec<(&'static str, usize)> = SERVICES
            .iter()
            .map(|s| (*s, topology.replicas))
            .chain([(GATEWAY, topology.gateways)])
            .collect();
        let total: usize = counts.iter().map(|(_, n)| n).sum();
        let mut ports = free_ports(2 * total).into_iter();
        let mut next = || SocketAddr::from(([127, 0, 0, 1], ports.next().expect("enough ports")));
        // (process name, service, listen address, admin address)
        let mut layout = Vec::with_capacity(total);
        for (service, n) in &counts {
            for index in 1..=*n {
                layout.push((replica(service, index), *service, next(), next()));
            }
        }
        let urls = |service: &str| {
            let list: Vec<String> = layout
                .iter()
                .filter(|(_, s, _, _)| *s == service)
                .map(|(_, _, listen, _)| format!("http://{listen}"))
                .collect();
            list.join(",")
        };
        let db = |s: &str| self.databases[s].url.clone();
        let mut common: Vec<(&str, String)> = vec![
            ("RUST_LOG", "info".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("DEPLOYMENT_ENVIRONMENT", "test".into()),
            ("AUTH_URL", urls("auth")),
            ("CONTENT_URL", urls("content")),
            ("NOTIFICATION_URL", urls("notification")),
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
            (
                "GATEWAY_UPLOADS_URL",
                self.uploads.path().display().to_string(),
            ),
        ];
        if topology.replicas > 1 {
            // Every auth replica signs with the one key the others verify
            // (a single replica makes its own at start).
            common.push(("AUTH_JWT_PRIVATE_KEY", TEST_SIGNING_KEY.into()));
        }
        common.extend(topology.env.iter().cloned());
        self.admin.clear();
        self.gateways.clear();
        for (name, service, listen, admin) in layout {
            let mut env: Vec<(String, String)> = common
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let (listen_setting, metrics_setting) = match service {
                GATEWAY => ("GATEWAY_LISTEN".to_owned(), "GATEWAY_METRICS_LISTEN"),
                _ => (
                    format!("{}_LISTEN", service.to_uppercase()),
                    "METRICS_LISTEN",
                ),
            };
            env.push((listen_setting, listen.to_string()));
            env.push((metrics_setting.to_owned(), admin.to_string()));
            if service == GATEWAY {
                self.gateways.push(listen);
            }
            self.admin.insert(name.clone(), admin);
            self.processes
                .push(Process::spawn(name, binaries[service].clone(), env));
        }
        self.gateway = self.gateways[0];
        self.wait_until_ready().await
    }

    async fn wait_until_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut exited = None;
            for process in &mut self.processes {
                if let Ok(Some(status)) = process.child.try_wait() {
                    process.exit = Some(status);
                    exited = Some((process.name.clone(), status));
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

    async fn answers(&self, url: String) -> bool {
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn is_ready(&self) -> bool {
        for gateway in &self.gateways {
            if !self.answers(format!("http://{gateway}/readyz")).await {
                return false;
            }
        }
        for admin in self.admin.values() {
            if !self.answers(format!("http://{admin}/metrics")).await {
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

    fn process(&mut self, name: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Sends `signal` to `process` and waits for it to exit (SIGKILL after
    /// [`DRAIN_TIMEOUT`]; `None`: it had to be killed).
    pub fn signal(&mut self, process: &str, signal: libc::c_int) -> Option<ExitStatus> {
        let process = self.process(process);
        assert!(
            process.is_running(),
            "quill-{} is not running",
            process.name
        );
        send(&process.child, signal);
        process.wait()
    }

    /// Starts a stopped `process` again with the environment (ports
    /// included) it had, and waits until it serves its metrics.
    pub async fn restart(&mut self, name: &str) {
        let process = self.process(name);
        assert!(!process.is_running(), "quill-{name} is still running");
        let (child, stdout, stderr) = spawn(
            &process.binary,
            &process.env,
            process.stdout.clone(),
            process.stderr.clone(),
        );
        process.child = child;
        process.stdout = stdout;
        process.stderr = stderr;
        process.exit = None;
        let deadline = Instant::now() + START_TIMEOUT;
        let admin = format!("http://{}/metrics", self.admin[name]);
        while !self.answers(admin.clone()).await {
            let process = self.process(name);
            if let Ok(Some(status)) = process.child.try_wait() {
                process.exit = Some(status);
                panic!(
                    "quill-{name} exited on restart ({status}):\n{}",
                    self.output(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "quill-{name} did not restart within {START_TIMEOUT:?}:\n{}",
                self.output(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM to every process still running and waits for each to
    /// drain (SIGKILL after [`DRAIN_TIMEOUT`]); returns how each one exited
    /// (`None`: it had to be killed).
    pub fn stop(&mut self) -> Vec<(String, Option<ExitStatus>)> {
        for process in &mut self.processes {
            if process.is_running() {
                send(&process.child, libc::SIGTERM);
            }
        }
        self.processes
            .iter_mut()
            .map(|process| (process.name.clone(), process.wait()))
            .collect()
    }

    /// Every WARN and ERROR line any process logged, however long ago.
    fn problems(&self) -> String {
        let mut out = String::new();
        for process in &self.processes {
            let stdout = process.stdout.lock().unwrap();
            for line in stdout.iter().filter(|line| {
                line.contains(r#""level":"ERROR""#) || line.contains(r#""level":"WARN""#)
            }) {
                out.push_str(&format!("quill-{}: {line}\n", process.name));
            }
        }
        out
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
            eprintln!("{outcome:?}\n{}{}", self.problems(), self.output(40));
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

/// The four binaries by service: the gateway's as Cargo built it for this
/// test, the services' from the same directory (`cargo build --workspace
/// --bins`).
fn binaries() -> BTreeMap<&'static str, PathBuf> {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_quill-gateway"));
    let dir = gateway.parent().expect("binary directory").to_owned();
    let mut binaries: BTreeMap<&'static str, PathBuf> = SERVICES
        .iter()
        .map(|s| {
            (
                *s,
                dir.join(format!("quill-{s}{}", std::env::consts::EXE_SUFFIX)),
            )
        })
        .collect();
    binaries.insert(GATEWAY, gateway);
    for path in binaries.values() {
        assert!(
            Path::new(path).is_file(),
            "{} is missing: this test runs the real binaries; build them first with \
             `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    binaries
}

/// Starts `binary` with exactly `env` (nothing from the developer's shell,
/// such as a stray OTEL_SERVICE_NAME or AMQP_URL, leaks in), appending its
/// output to `stdout` and `stderr`.
fn spawn(
    binary: &Path,
    env: &[(String, String)],
    stdout: Lines,
    stderr: Lines,
) -> (Child, Lines, Lines) {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    collect(child.stdout.take().expect("piped stdout"), stdout.clone());
    collect(child.stderr.take().expect("piped stderr"), stderr.clone());
    (child, stdout, stderr)
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

/// Appends a child's output, line by line, to a shared buffer.
fn collect(stream: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

#[allow(unsafe_code)]
fn send(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A backstop for when the test process itself dies (a timeout's SIGKILL)
/// and no destructor runs: the kernel kills the children too. The signal
/// follows the spawning thread, so start the system from the test's own
/// task (which `block_on` keeps on the test thread), not a spawned one.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command) {
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
