//! Support for `processes.rs`: the four binaries as separate processes, an
//! OTLP receiver for their spans, and a reader for their metrics.

pub mod monitoring;
pub mod otlp;
pub mod prometheus;
pub mod system;
