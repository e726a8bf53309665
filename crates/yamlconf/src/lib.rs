/*!
Loading a daemon's YAML configuration file, the same way for every mfsha daemon.

This crate owns how a configuration file becomes a typed value and how that fails: reading the
file, treating an empty (or comments-only) file as "all defaults", turning serde_yaml's messages
into a [`ConfigError`] that names the file, the dotted key, its line and column and what is
allowed there, running the daemon's own checks, and the field parsers that several daemons
share (`IP:PORT`, `HOST:PORT`). Each daemon keeps its own config *types*, defaults and checks.

It must never depend on another mfsha crate (and nothing but serde, serde_yaml and thiserror):
the master, the chunkserver and the metalogger all use it, and an operator should see one
error format whichever daemon refused to start — which is why it is a crate of its own rather
than a module of the wire-protocol crate, which knows nothing about files.
*/

use serde::de::DeserializeOwned;
use serde::Deserializer;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used. Display names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// `key` is the dotted path (e.g. `raft.tick_ms`), `line`/`column` are 1-based (0 when
    /// serde_yaml gives no position).
    #[error("config file {path}: {key} (line {line}, column {column}): {reason}")]
    Parse { path: PathBuf, key: String, line: usize, column: usize, reason: String },
    #[error("config file {path}: {key}: {reason}")]
    Invalid { path: PathBuf, key: String, reason: String },
}

/// A daemon's checks of what serde cannot express: `Err((dotted key, why))`.
pub type Check<T> = fn(&T) -> Result<(), (&'static str, String)>;

/// Reads the file at `path`, parses it and runs `check`.
pub fn load<T: DeserializeOwned>(path: &Path, check: Check<T>) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|cause| ConfigError::Read { path: path.to_path_buf(), cause })?;
    parse(path, &text, check)
}

/// Parses configuration text and runs `check`; `path` is only used in error messages. An
/// empty or comments-only document is an empty mapping (serde_yaml would call it a missing
/// value): all defaults where the type has them, "missing field" where it does not.
pub fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    check: Check<T>,
) -> Result<T, ConfigError> {
    let text = if is_only_comments(text) { "{}" } else { text };
    let config: T = serde_yaml::from_str(text).map_err(|e| parse_error(path, e))?;
    check(&config).map_err(|(key, reason)| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    })?;
    Ok(config)
}

fn is_only_comments(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// serde_yaml prefixes messages with the dotted key path ("raft.tick_ms: invalid type: …")
/// and appends " at line L column C"; split those apart so each has its own field.
fn parse_error(path: &Path, error: serde_yaml::Error) -> ConfigError {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    let mut message = error.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    let (section, reason) = match message.split_once(": ") {
        Some((key, reason)) if !key.contains(' ') && !key.is_empty() => {
            (Some(key.to_string()), reason.to_string())
        }
        _ => (None, message),
    };
    // For an unknown key the path names its section; add the key itself.
    let unknown = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    let key = match (section, unknown) {
        (Some(section), Some(field)) => format!("{section}.{field}"),
        (None, Some(field)) => field,
        (Some(section), None) => section,
        (None, None) => "(top level)".to_string(),
    };
    ConfigError::Parse { path: path.to_path_buf(), key, line, column, reason }
}

/// What an `IP:PORT` field accepts, for error messages.
pub const IP_PORT: &str = "an address of the form IP:PORT (e.g. 0.0.0.0:9421 or [::]:9422)";
/// What a `HOST:PORT` field accepts, for error messages.
pub const HOST_PORT: &str = "an address of the form HOST:PORT (e.g. mfsmaster:9420)";

/// `#[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]`: `IP:PORT`. The check runs
/// inside the visitor so that serde_yaml reports the full key path (`listen.client`).
pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    deserializer.deserialize_str(CheckedStr { expecting: IP_PORT, parse: |t| t.parse().ok() })
}

/// `#[serde(deserialize_with = "mfsha_yamlconf::host_port")]`: `HOST:PORT` (a host name or
/// IP, port not 0), kept as text: host names are resolved at connect time.
pub fn host_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let parse = |text: &str| check_host_port(text).ok().map(|()| text.to_string());
    deserializer.deserialize_str(CheckedStr { expecting: HOST_PORT, parse })
}

/// `#[serde(default, deserialize_with = "mfsha_yamlconf::opt_host_port")]`: an optional
/// `HOST:PORT` (absent means `None`; present must be valid).
pub fn opt_host_port<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    host_port(deserializer).map(Some)
}

/// `Ok` if `text` is `HOST:PORT`; otherwise the message to show.
pub fn check_host_port(text: &str) -> Result<(), String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(())
        }
        _ => Err(format!("{text:?} is not {HOST_PORT}")),
    }
}

/// A string visitor that parses with `parse` and names `expecting` when it fails.
struct CheckedStr<T> {
    expecting: &'static str,
    parse: fn(&str) -> Option<T>,
}

impl<T> serde::de::Visitor<'_> for CheckedStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).ok_or_else(|| E::custom(format!("{text:?} is not {}", self.expecting)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Top {
        count: u32,
        inner: Inner,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(deserialize_with = "socket_addr")]
        listen: SocketAddr,
        #[serde(default = "no_peer", deserialize_with = "host_port")]
        peer: String,
    }

    fn no_peer() -> String {
        "m:1".into()
    }

    impl Default for Top {
        fn default() -> Self {
            Top {
                count: 1,
                inner: Inner { listen: "127.0.0.1:1".parse().unwrap(), peer: no_peer() },
            }
        }
    }

    fn positive(top: &Top) -> Result<(), (&'static str, String)> {
        match top.count {
            0 => Err(("count", "must be at least 1".into())),
            _ => Ok(()),
        }
    }

    fn parse_str(text: &str) -> Result<Top, ConfigError> {
        parse(Path::new("/etc/x.yaml"), text, positive)
    }

    #[test]
    fn empty_and_comment_only_files_give_defaults() {
        assert_eq!(parse_str("").unwrap(), Top::default());
        assert_eq!(parse_str("# nothing\n---\n").unwrap(), Top::default());
    }

    #[test]
    fn errors_name_file_dotted_key_position_and_what_is_allowed() {
        let err = parse_str("count: 2\ninner:\n  listen: 1.2.3.4:5\n  peeer: x\n").unwrap_err();
        match &err {
            ConfigError::Parse { key, line, .. } => {
                assert_eq!((key.as_str(), *line), ("inner.peeer", 4))
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("config file /etc/x.yaml: inner.peeer (line 4"), "{text}");
        assert!(text.contains("listen") && text.contains("peer"), "lists allowed keys: {text}");
        let err = parse_str("inner:\n  listen: nowhere\n").unwrap_err().to_string();
        assert!(err.contains("inner.listen") && err.contains("IP:PORT"), "{err}");
        let err = parse_str("inner:\n  listen: 1.2.3.4:5\n  peer: m2\n").unwrap_err().to_string();
        assert!(err.contains("inner.peer") && err.contains("HOST:PORT"), "{err}");
        let err = parse_str("count: many\n").unwrap_err().to_string();
        assert!(err.contains("count (line 1") && err.contains("u32"), "{err}");
        let err = parse_str("count: 0\n").unwrap_err().to_string();
        assert_eq!(err, "config file /etc/x.yaml: count: must be at least 1");
        let err = load::<Top>(Path::new("/nonexistent/x.yaml"), positive).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read config file /nonexistent/x.yaml"),
            "{err}"
        );
    }

    #[test]
    fn host_port_needs_a_host_and_a_nonzero_port() {
        assert!(check_host_port("m1:9420").is_ok());
        assert!(check_host_port("[::1]:9420").is_ok());
        for bad in ["m1", ":9420", "m1:0", "m1:port", "m1:70000"] {
            assert!(check_host_port(bad).unwrap_err().contains("HOST:PORT"), "{bad}");
        }
    }
}
