//! raft-rs logs through `slog`; the rest of mfsha logs through `tracing`. [`TracingDrain`] is a
//! slog `Drain` that re-emits every raft record as a `tracing` event (target `raft`), with the
//! record's key-value pairs rendered after the message, so one subscriber sees everything.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// A slog drain that forwards records to `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

/// A slog logger for raft-rs whose records go to `tracing`, tagged with the node id.
pub fn raft_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => node_id))
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // Before any field is rendered: raft-rs logs every message it sends at debug level,
        // a `MsgSnapshot` with its whole blob, and rendering that (hundreds of MiB as a
        // Debug byte list) stalled the Raft thread for seconds with debug logs off.
        if !level_enabled(record.level()) {
            return Ok(());
        }
        let mut fields = FieldWriter::default();
        // Serializing into a String cannot fail; a failure would only shorten the line.
        if record.kv().serialize(record, &mut fields).is_err()
            || values.serialize(record, &mut fields).is_err()
        {
            fields.text.push_str(" <unformattable fields>");
        }
        let message = record.msg();
        let module = record.module();
        let fields = fields.text.as_str();
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", module, "{message}{fields}")
            }
            Level::Warning => tracing::warn!(target: "raft", module, "{message}{fields}"),
            Level::Info => tracing::info!(target: "raft", module, "{message}{fields}"),
            Level::Debug => tracing::debug!(target: "raft", module, "{message}{fields}"),
            Level::Trace => tracing::trace!(target: "raft", module, "{message}{fields}"),
        }
        Ok(())
    }
}

/// Renders slog key-value pairs as ` key=value` text.
fn level_enabled(level: Level) -> bool {
    match level {
        Level::Critical | Level::Error => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
        Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

/// The longest rendering of one field: a message with a snapshot or a batch of entries is
/// cut there (with debug logs on) instead of being rendered whole.
const FIELD_LIMIT: usize = 4096;

#[derive(Default)]
struct FieldWriter {
    text: String,
}

impl Serializer for FieldWriter {
    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        write!(self.text, " {key}=").map_err(|_| slog::Error::Other)?;
        let mut field = Limited { text: &mut self.text, left: FIELD_LIMIT };
        if field.write_fmt(*value).is_err() {
            // Limited refused more: the value is cut, not lost.
            self.text.push('…');
        }
        Ok(())
    }
}

/// Appends to `text` until `left` bytes are used, then fails, which stops the formatting.
struct Limited<'a> {
    text: &'a mut String,
    left: usize,
}

impl fmt::Write for Limited<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() > self.left {
            let mut end = self.left;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.left = 0;
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        self.left -= s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::subscriber::with_default;

    /// A tracing subscriber that records (level, target, message) of each event.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<(tracing::Level, String, String)>>>, bool);

    /// Counts how often it is rendered.
    struct Rendered(Arc<std::sync::atomic::AtomicUsize>);

    impl fmt::Debug for Rendered {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f.write_str(&"x".repeat(100_000))
        }
    }

    struct MessageVisitor(String);
    impl Visit for MessageVisitor {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
            // Capture(…, info_only): what a master runs with by default.
            !self.1 || *meta.level() <= tracing::Level::INFO
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut visitor = MessageVisitor(String::new());
            event.record(&mut visitor);
            let meta = event.metadata();
            self.0.lock().unwrap().push((*meta.level(), meta.target().to_string(), visitor.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn forwards_level_message_and_fields() {
        let capture = Capture::default();
        with_default(capture.clone(), || {
            let logger = raft_logger(7);
            slog::warn!(logger, "became leader"; "term" => 3);
            slog::debug!(logger, "tick");
        });
        let events = capture.0.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].0, tracing::Level::WARN);
        assert_eq!(events[0].1, "raft");
        assert!(events[0].2.contains("became leader"), "{}", events[0].2);
        assert!(events[0].2.contains("term=3"), "{}", events[0].2);
        assert!(events[0].2.contains("raft_id=7"), "{}", events[0].2);
        assert_eq!(events[1].0, tracing::Level::DEBUG);
    }

    #[test]
    fn fields_of_disabled_levels_are_not_rendered_and_long_ones_are_cut() {
        let capture = Capture(Arc::default(), true);
        let rendered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        with_default(capture.clone(), || {
            let logger = raft_logger(7);
            slog::debug!(logger, "sending"; "msg" => ?Rendered(rendered.clone()));
            slog::info!(logger, "received"; "msg" => ?Rendered(rendered.clone()));
        });
        assert_eq!(rendered.load(std::sync::atomic::Ordering::Relaxed), 1, "only the info one");
        let events = capture.0.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let text = &events[0].2;
        assert!(text.len() < FIELD_LIMIT + 200, "cut: {} bytes", text.len());
        assert!(text.contains("msg=xxx") && text.contains('…'), "{}", &text[..100]);
    }
}
