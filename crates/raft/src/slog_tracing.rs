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
#[derive(Default)]
struct FieldWriter {
    text: String,
}

impl Serializer for FieldWriter {
    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        write!(self.text, " {key}={value}").map_err(|_| slog::Error::Other)
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
    struct Capture(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

    struct MessageVisitor(String);
    impl Visit for MessageVisitor {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
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
}
