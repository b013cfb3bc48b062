//! Integration tests of the gateway: the REST API through the real services, its edge, security and processes.
//!
//! One test binary per crate: built and linked once. nextest runs every
//! test in its own process, so process-wide state (telemetry, metrics)
//! stays per test.

mod account_cache;
mod accounts_api;
mod browser;
mod caching;
mod content_api;
mod docs_page;
mod edge;
mod front_end;
mod hostile_input;
mod keys;
mod metrics;
mod notification_rules;
mod notification_stream;
mod notifications_api;
mod processes;
mod processes_support;
mod rate_limit_headers;
mod readme;
mod reflection;
mod replicas;
mod security;
mod size_limits;
mod support;
mod uploads;
