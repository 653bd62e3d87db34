//! Logging: JSON lines on stdout, filtered by `RUST_LOG` (default `info`).
//! Every event inside a request carries the request span's fields.
//!
//! An event's fields share the line with the formatter's own keys
//! (`timestamp`, `level`, `message`, `target`, `span`): a field under one of
//! those names would write the key twice, which strict JSON parsers reject.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub(crate) fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json_layer(std::io::stdout))
        .try_init();
}

/// The production line format writing to `writer` (the test suite checks
/// every line it produces through this same layer).
pub fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .flatten_event(true)
        .with_writer(writer)
}
