//! Logging set-up: JSON lines when stdout is not a terminal (production,
//! CI), human-readable otherwise; the level always comes from `RUST_LOG`.

use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Default filter: our crates at info, the chatty transport crates at warn.
/// An unfiltered subscriber logs h2/tonic at TRACE and costs >10x throughput.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,hyper_util=warn,sqlx=warn,lapin=warn";

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::io::stdout().is_terminal() {
        registry.with(fmt::layer().compact()).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    };
    // A second init (several servers in one test process) is expected.
    let _ = result;
}
