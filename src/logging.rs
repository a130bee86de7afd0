//! Diagnostics: one `tracing` subscriber for the whole binary, on stderr (stdout carries the
//! progress lines and command output).
//!
//! * `HEARTH_LOG` filters, with `tracing`'s directive syntax (`debug`,
//!   `hearth_executor=debug,info`, …); the default is `info`. A malformed filter is reported
//!   once and the default used.
//! * `--log-format text` (the default) writes human lines; `--log-format json` writes one JSON
//!   object per line: `{"timestamp_ms", "level", "target", "message", ...fields}`.

use std::fmt;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable holding the filter.
pub const ENV: &str = "HEARTH_LOG";

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let (filter, bad) = match std::env::var(ENV) {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("{ENV}={spec:?}: {e}"))),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A stderr that cannot be written (a log file on a full disk) must not be reported on
        // that same stderr: the report would panic, and the executor with it.
        .log_internal_errors(false);
    let installed = match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    if let Err(e) = installed {
        let _ = writeln!(std::io::stderr(), "hearth: cannot install logging: {e}");
    }
    if let Some(bad) = bad {
        tracing::warn!("ignoring a malformed log filter, using info: {bad}");
    }
}

/// Formats an event as one JSON object on one line.
#[derive(Debug, Clone, Copy)]
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields(serde_json::Map::new());
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        fields
            .0
            .insert("timestamp_ms".into(), serde_json::json!(timestamp_ms));
        fields
            .0
            .insert("level".into(), meta.level().as_str().into());
        fields.0.insert("target".into(), meta.target().into());
        event.record(&mut fields);
        let line = serde_json::Value::Object(fields.0).to_string();
        writeln!(writer, "{line}")
    }
}

/// An event's fields as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_one_object_per_event_with_the_fields() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug"))
            .event_format(JsonLines)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(process = "web", run = 3_u64, "launching");
            tracing::warn!("a \"quoted\"\nmessage");
        });
        let text = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "launching");
        assert_eq!(lines[0]["process"], "web");
        assert_eq!(lines[0]["run"], 3);
        assert_eq!(lines[0]["level"], "DEBUG");
        assert_eq!(lines[1]["message"], "a \"quoted\"\nmessage");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
