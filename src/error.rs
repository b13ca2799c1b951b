//! The library's error type: every variant says where (op, file, case) and what went wrong.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op received tensors whose shapes or arguments do not fit together.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A value that must be finite was NaN or infinite (a loss, a gradient, a voxel).
    #[error("{what}: non-finite value ({detail})")]
    NonFinite { what: String, detail: String },
    /// A problem with a file: unreadable, corrupt, inconsistent with its case.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A problem with a dataset or a case that is not tied to a single file.
    #[error("{context}: {msg}")]
    Data { context: String, msg: String },
    /// A bad option or configuration value.
    #[error("invalid {name}: {msg}")]
    Config { name: String, msg: String },
    /// A failure inside a backend (device, driver, kernel launch).
    #[error("{backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
    /// An operating-system error. The OS reason is part of the message and deliberately
    /// not a `source()`: `{:#}` (anyhow) prints a source after the message, which would
    /// show it twice.
    #[error("{context}: {reason}")]
    Io {
        context: String,
        reason: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Up to five names (case ids, files) for a message, then how many more.
pub fn few<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(|s| s.as_ref()).collect();
    match names.len().saturating_sub(5) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

/// Fails unless buffer `what` of op `op` has the `want` elements its geometry needs.
pub fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(Error::shape(
            op,
            format!("{what} has {len} elements, the geometry needs {want}"),
        ));
    }
    Ok(())
}

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn data(context: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Data {
            context: context.into(),
            msg: msg.into(),
        }
    }
    pub fn config(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            name: name.into(),
            msg: msg.into(),
        }
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            reason: source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_shows_five_names_then_how_many_more() {
        assert_eq!(few::<&str>(&[]), "");
        assert_eq!(few(&["a", "b", "c", "d", "e"]), "a, b, c, d, e");
        assert_eq!(
            few(&["a", "b", "c", "d", "e", "f", "g"]),
            "a, b, c, d, e, and 2 more"
        );
    }

    #[test]
    fn an_os_error_is_printed_once_through_anyhow() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let reason = os.to_string();
        let e = anyhow::Error::from(Error::io("reading x.json", os));
        let shown = format!("{e:#}");
        assert_eq!(shown, format!("reading x.json: {reason}"));
        assert_eq!(shown.matches(&reason).count(), 1, "{shown}");
    }
}
