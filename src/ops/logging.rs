//! The log on standard error: its level and line format (`[log]`), and the
//! request id on every line written while a request is being handled.
//!
//! The request id lives in a tokio task-local set around each request's
//! future (`http::request_id`), not in a `tracing` span: a span per request
//! would cost a registry slot and a formatted copy of its fields on every
//! `/verify`, logged or not, while a task-local costs a counter increment
//! and is read only when a line is actually written.
//!
//! `RUST_LOG`, when it names a level, overrides `log.level` for that run
//! (debugging without editing the config); anything else in it is ignored
//! with a warning, since latchkey has no per-module filters.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat, LogLevel};

tokio::task_local! {
    /// The id of the request whose future is being polled.
    static REQUEST_ID: u64;
}

/// Ids count up from 1 in each process; with the timestamps, that tells
/// one request's lines from another's.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A request's future, with its id set while it is polled.
pub type InRequest<F> = tokio::task::futures::TaskLocalFuture<u64, F>;

/// The next request id.
pub fn next_request_id() -> u64 {
    NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed)
}

/// Runs `f` (the synchronous part of a request's handling) with `id` set.
pub fn in_request_sync<R>(id: u64, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}

/// Polls `future` (the rest of a request's handling) with `id` set.
pub fn in_request<F: Future>(id: u64, future: F) -> InRequest<F> {
    REQUEST_ID.scope(id, future)
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<u64> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// The level to log at: `RUST_LOG` when it names one, else `log.level`;
/// the second value is a `RUST_LOG` that was set but ignored.
pub fn max_level(configured: LogLevel, rust_log: Option<&str>) -> (LevelFilter, Option<&str>) {
    let configured = LevelFilter::from_level(level(configured));
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (configured, None),
        Some(value) => match value.parse::<LevelFilter>() {
            Ok(level) => (level, None),
            Err(_) => (configured, Some(value)),
        },
    }
}

fn level(level: LogLevel) -> Level {
    match level {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    }
}

/// Starts logging to standard error as `config` says, `rust_log` (the
/// variable's value) overriding the level. Call it once, after the config
/// is loaded; a second call changes nothing.
pub fn init(config: &LogConfig, rust_log: Option<&str>) {
    let (max_level, ignored) = max_level(config.level, rust_log);
    let installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(max_level)
        .event_format(Lines::new(config.format))
        .try_init();
    if let (Ok(()), Some(value)) = (installed, ignored) {
        tracing::warn!(
            "RUST_LOG={value:?} is not a level (error, warn, info, debug, trace or off); \
             log.level applies"
        );
    }
}

/// The line format: `text` or `json`, one line per event.
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    format: LogFormat,
}

impl Lines {
    pub fn new(format: LogFormat) -> Lines {
        Lines { format }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        let request = current_request_id();
        match self.format {
            LogFormat::Text => {
                // tracing-subscriber's own layout (what latchkey printed
                // before `[log]` existed), plus the request id at the end.
                SystemTime.format_time(&mut writer)?;
                write!(writer, " {level:>5} ")?;
                ctx.field_format().format_fields(writer.by_ref(), event)?;
                if let Some(id) = request {
                    write!(writer, " request_id={id}")?;
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let mut timestamp = String::new();
                SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
                let mut fields = JsonFields::default();
                event.record(&mut fields);
                let mut line = JsonLine::default();
                line.push("timestamp", &Value::String(timestamp))?;
                line.push("level", &Value::from(level.as_str().to_ascii_lowercase()))?;
                line.push(
                    "message",
                    &Value::String(fields.message.unwrap_or_default()),
                )?;
                for (name, value) in &fields.fields {
                    line.push(name, value)?;
                }
                if let Some(id) = request {
                    line.push("request_id", &Value::from(id))?;
                }
                writeln!(writer, "{}}}", line.text)
            }
        }
    }
}

/// Keys latchkey writes itself: a field of the same name is renamed
/// `field.NAME`, so no key appears twice in a line.
const OWN_KEYS: [&str; 4] = ["timestamp", "level", "message", "request_id"];

/// An event's message and fields, as JSON values, in the order written.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: Vec<(Cow<'static, str>, Value)>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // Metadata of events from the `log` crate (actix's), not fields.
        if name.starts_with("log.") {
            return;
        }
        if name == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let name = if OWN_KEYS.contains(&name) {
            Cow::Owned(format!("field.{name}"))
        } else {
            Cow::Borrowed(name)
        };
        self.fields.push((name, value));
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%ip` and the message arrive here, already in their display form.
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// A JSON object being written key by key (serde_json's map would sort
/// the keys; people read `timestamp`, `level` and `message` first).
#[derive(Default)]
struct JsonLine {
    text: String,
}

impl JsonLine {
    fn push(&mut self, key: &str, value: &Value) -> fmt::Result {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        // Serializing a string or a `Value` cannot fail; map it all the same.
        let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
        let value = serde_json::to_string(value).map_err(|_| fmt::Error)?;
        self.text.push_str(&key);
        self.text.push(':');
        self.text.push_str(&value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything the subscriber writes, kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs in `format`.
    fn lines(format: LogFormat, emit: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::TRACE)
            .event_format(Lines::new(format))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_json_line_is_one_object_with_timestamp_level_message_and_the_fields() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7}";
        let lines = lines(LogFormat::Json, || {
            tracing::info!(user = tricky, %ip, n = 3_u64, ok = true, "login {}", "ok");
            tracing::warn!(level = "a field named level", "clash");
            in_request_sync(42, || tracing::debug!("inside a request"));
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let first: serde_json::Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first.len(), 7, "{first:?}");
        // In the order people read them (a parsed map forgets the order).
        let at = |key: &str| lines[0].find(&format!("\"{key}\":")).unwrap();
        let keys = ["timestamp", "level", "message", "user", "ip", "n", "ok"];
        assert!(keys.windows(2).all(|w| at(w[0]) < at(w[1])), "{}", lines[0]);
        assert_eq!(first["level"], "info");
        assert_eq!(first["message"], "login ok");
        assert_eq!(first["user"], tricky);
        assert_eq!(first["ip"], "127.0.0.1");
        assert_eq!(first["n"], 3);
        assert_eq!(first["ok"], true);
        let timestamp = first["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
            "{timestamp}"
        );
        assert!(!first.contains_key("request_id"));

        let clash: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(clash["level"], "warn");
        assert_eq!(clash["field.level"], "a field named level");
        let inside: Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(inside["request_id"], 42);
        assert_eq!(inside["level"], "debug");
    }

    #[test]
    fn a_text_line_ends_with_the_request_id_inside_a_request_only() {
        let lines = lines(LogFormat::Text, || {
            tracing::info!(user = "alice", "login");
            in_request_sync(7, || tracing::info!(user = "alice", "login"));
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].ends_with(" INFO login user=\"alice\""),
            "{lines:#?}"
        );
        assert!(
            lines[1].ends_with(" INFO login user=\"alice\" request_id=7"),
            "{lines:#?}"
        );
    }

    #[test]
    fn rust_log_overrides_the_configured_level_only_when_it_names_one() {
        assert_eq!(max_level(LogLevel::Info, None), (LevelFilter::INFO, None));
        assert_eq!(
            max_level(LogLevel::Warn, Some("")),
            (LevelFilter::WARN, None)
        );
        assert_eq!(
            max_level(LogLevel::Info, Some("trace")),
            (LevelFilter::TRACE, None)
        );
        assert_eq!(
            max_level(LogLevel::Debug, Some("off")),
            (LevelFilter::OFF, None)
        );
        assert_eq!(
            max_level(LogLevel::Error, Some("actix_web=debug")),
            (LevelFilter::ERROR, Some("actix_web=debug"))
        );
    }

    #[tokio::test]
    async fn the_request_id_follows_the_request_across_awaits_and_no_further() {
        let id = next_request_id();
        let seen = in_request(id, async {
            let before = current_request_id();
            tokio::task::yield_now().await;
            (before, current_request_id())
        })
        .await;
        assert_eq!(seen, (Some(id), Some(id)));
        assert_eq!(current_request_id(), None);
        assert!(next_request_id() > id);
    }
}
