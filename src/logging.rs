//! Diagnostics: one `tracing` subscriber for the whole program, on stderr (stdout carries the
//! progress lines and command output).
//!
//! * `HEARTH_LOG` filters: comma-separated directives, each a level (`debug`) or a target prefix
//!   and a level (`hearth_executor=debug`, `hearth_executor::health=trace`); an event is kept
//!   when the longest target prefix that names it allows its level, else when the bare level
//!   does. The default is `info`. A malformed filter is reported once and the default used.
//! * `--log-format text` (the default) writes `TIME LEVEL target: message key=value ...`;
//!   `--log-format json` writes one JSON object per line:
//!   `{"timestamp_ms", "level", "target", "message", ...fields}`.
//!
//! The subscriber is written here rather than taken from `tracing-subscriber`: each task's
//! executor and keeper stay resident for the task's life, and that crate's registry, formatter and
//! filter were about 580 KiB of their PSS (`cargo bench --bench executor`, row (a)). Hearth
//! records no spans, so this one keeps none: a span is given a dummy id and ignored.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

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
        Ok(spec) => match spec.parse::<Filter>() {
            Ok(f) => (f, None),
            Err(e) => (Filter::default(), Some(format!("{ENV}={spec:?}: {e}"))),
        },
        Err(_) => (Filter::default(), None),
    };
    let subscriber = Stderr {
        filter,
        format,
        write: || std::io::stderr().lock(),
    };
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        let _ = writeln!(std::io::stderr(), "hearth: cannot install logging: {e}");
    }
    if let Some(bad) = bad {
        tracing::warn!("ignoring a malformed log filter, using info: {bad}");
    }
}

/// Which events are kept: per target prefix, the most verbose level kept; else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Longest prefix first, so that the first match is the most specific.
    targets: Vec<(String, LevelFilter)>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            default: LevelFilter::INFO,
            targets: Vec::new(),
        }
    }
}

impl Filter {
    /// Whether an event of `level` from `target` is kept.
    pub fn allows(&self, target: &str, level: &Level) -> bool {
        let limit = self
            .targets
            .iter()
            .find(|(prefix, _)| {
                target
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l);
        *level <= limit
    }

    /// The most verbose level any directive keeps.
    fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, std::cmp::max)
    }
}

impl FromStr for Filter {
    type Err = String;

    fn from_str(spec: &str) -> Result<Filter, String> {
        let level = |text: &str| {
            text.trim().parse::<LevelFilter>().map_err(|_| {
                format!(
                    "{:?} is not a level (off, error, warn, info, debug, trace)",
                    text.trim()
                )
            })
        };
        let mut filter = Filter {
            default: LevelFilter::OFF,
            targets: Vec::new(),
        };
        let mut bare = false;
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, l)) => {
                    let target = target.trim();
                    if target.is_empty() || target.contains(char::is_whitespace) {
                        return Err(format!("{directive:?}: expected TARGET=LEVEL"));
                    }
                    filter.targets.push((target.to_owned(), level(l)?));
                }
                None => {
                    filter.default = level(directive)?;
                    bare = true;
                }
            }
        }
        if !bare && filter.targets.is_empty() {
            filter.default = LevelFilter::INFO;
        }
        filter
            .targets
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(filter)
    }
}

/// Writes each kept event as one line to what `write` opens.
struct Stderr<W> {
    filter: Filter,
    format: LogFormat,
    write: W,
}

impl<W, O> Subscriber for Stderr<W>
where
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // The filter never changes: whether a call site is enabled is decided once.
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && self.filter.allows(meta.target(), meta.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter.max())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = match self.format {
            LogFormat::Text => text_line(event, now_ms()),
            LogFormat::Json => json_line(event, now_ms()),
        };
        // A stderr that cannot be written (a log file on a full disk) has nowhere to be
        // reported: the line is dropped.
        let _ = (self.write)().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-12-02T18:28:45.644Z  INFO hearth_executor::supervise: message key=value\n`.
fn text_line(event: &Event<'_>, now_ms: i64) -> String {
    let meta = event.metadata();
    let mut fields = TextFields::default();
    event.record(&mut fields);
    format!(
        "{} {:>5} {}: {}{}\n",
        hearth_checkpoints::inspect::format_time_ms(now_ms),
        meta.level().as_str(),
        meta.target(),
        fields.message,
        fields.rest
    )
}

/// The message, then ` key=value` for every other field.
#[derive(Default)]
struct TextFields {
    message: String,
    rest: String,
}

impl Visit for TextFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        use fmt::Write as _;
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// `{"timestamp_ms":...,"level":"INFO","target":"...","message":"...",...fields}\n`.
fn json_line(event: &Event<'_>, now_ms: i64) -> String {
    let meta = event.metadata();
    let mut fields = JsonFields(serde_json::Map::new());
    fields
        .0
        .insert("timestamp_ms".into(), serde_json::json!(now_ms));
    fields
        .0
        .insert("level".into(), meta.level().as_str().into());
    fields.0.insert("target".into(), meta.target().into());
    event.record(&mut fields);
    let mut line = serde_json::Value::Object(fields.0).to_string();
    line.push('\n');
    line
}

/// An event's fields as JSON values.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
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
    use std::sync::{Arc, Mutex};

    /// What a subscriber with `filter` and `format` writes for the events `emit` sends.
    fn capture(filter: &str, format: LogFormat, emit: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = Stderr {
            filter: filter.parse().expect("a valid filter"),
            format,
            write: move || Sink(sink.clone()),
        };
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buf.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn json_lines_are_one_object_per_event_with_the_fields() {
        let text = capture("debug", LogFormat::Json, || {
            tracing::debug!(process = "web", run = 3_u64, "launching");
            tracing::warn!("a \"quoted\"\nmessage");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "launching");
        assert_eq!(lines[0]["process"], "web");
        assert_eq!(lines[0]["run"], 3);
        assert_eq!(lines[0]["level"], "DEBUG");
        assert!(lines[0]["timestamp_ms"].as_i64().is_some_and(|t| t > 0));
        assert_eq!(lines[1]["message"], "a \"quoted\"\nmessage");
        assert_eq!(lines[1]["target"], module_path!());
    }

    #[test]
    fn text_lines_carry_time_level_target_message_and_fields() {
        let text = capture("info", LogFormat::Text, || {
            tracing::info!(process = "web", pid = 42, "started");
            tracing::debug!("not kept at info");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let (time, rest) = lines[0].split_once(' ').unwrap_or_default();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.contains('T'),
            "{time}"
        );
        assert_eq!(
            rest,
            format!(" INFO {}: started process=\"web\" pid=42", module_path!())
        );
    }

    #[test]
    fn the_longest_matching_target_prefix_decides_else_the_bare_level() {
        let f: Filter = "warn,hearth_executor=debug,hearth_executor::health=error"
            .parse()
            .expect("valid");
        assert!(f.allows("hearth_executor::supervise", &Level::DEBUG));
        assert!(!f.allows("hearth_executor::supervise", &Level::TRACE));
        assert!(!f.allows("hearth_executor::health::http", &Level::WARN));
        assert!(f.allows("hearth_executor::health", &Level::ERROR));
        assert!(!f.allows("hearth_scheduler", &Level::INFO));
        assert!(f.allows("hearth_scheduler", &Level::WARN));
        // A prefix matches whole path segments only.
        assert!(!f.allows("hearth_executorx", &Level::INFO));
        assert_eq!(f.max(), LevelFilter::DEBUG);
    }

    #[test]
    fn without_a_bare_level_only_the_named_targets_are_kept_and_empty_means_info() {
        let f: Filter = "hearth_agent=debug".parse().expect("valid");
        assert!(f.allows("hearth_agent::host", &Level::DEBUG));
        assert!(!f.allows("hearth_scheduler", &Level::ERROR));
        let f: Filter = "".parse().expect("valid");
        assert_eq!(f, Filter::default());
        assert!(f.allows("anything", &Level::INFO));
        assert!(!f.allows("anything", &Level::DEBUG));
    }

    #[test]
    fn a_malformed_filter_names_the_directive() {
        let e = "info,hearth_executor=loud"
            .parse::<Filter>()
            .expect_err("loud is no level");
        assert!(e.contains("\"loud\" is not a level"), "{e}");
        let e = "=debug".parse::<Filter>().expect_err("no target");
        assert!(e.contains("\"=debug\": expected TARGET=LEVEL"), "{e}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

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
