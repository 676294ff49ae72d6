//! Structured logs: human-readable in dev, JSON in production. `ASSENT_LOG` (or `RUST_LOG`)
//! sets the filter.

use tracing_subscriber::EnvFilter;

use crate::config::Mode;

/// Installs the global log subscriber. Safe to call once per process.
pub fn init(mode: Mode) {
    let filter = std::env::var("ASSENT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match mode {
        Mode::Production => builder.json().flatten_event(true).try_init(),
        Mode::Dev => builder.try_init(),
    };
}
