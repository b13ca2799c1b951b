//! metrics.jsonl: one JSON object per line, appended and flushed line by line, so that a
//! crash loses at most the line being written and a resumed run continues the same file.
use crate::atomic;
use crate::error::{Error, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct JsonlWriter {
    path: PathBuf,
    file: File,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

impl JsonlWriter {
    /// Opens `path` for appending (creating it). A last line without its newline, left by a
    /// crash in the middle of a write, is cut off first so that new lines stay parseable.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_append(path)?;
        let text =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if text.last().is_some_and(|&b| b != b'\n') {
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(|e| {
                Error::io(
                    format!("cutting the partial last line of {}", path.display()),
                    e,
                )
            })?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record`, which must serialise to a JSON object, as one line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let value = serde_json::to_value(record).map_err(|e| {
            Error::data(
                self.path.display().to_string(),
                format!("record not serialisable: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(Error::data(
                self.path.display().to_string(),
                format!("a metrics line must be a JSON object, got {value}"),
            ));
        }
        let mut line = value.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Drops, atomically, every line whose `"step"` is later than `step` (and any line that
    /// does not parse), for resuming from an earlier checkpoint; lines without a step stay.
    pub fn truncate_after_step(&mut self, step: u64) -> Result<()> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        let kept: String = text
            .lines()
            .filter(
                |line| match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(map)) => map
                        .get("step")
                        .and_then(|s| s.as_u64())
                        .is_none_or(|s| s <= step),
                    _ => false,
                },
            )
            .flat_map(|line| [line, "\n"])
            .collect();
        atomic::write_bytes(&self.path, kept.as_bytes())?;
        // The rename replaced the file, so the old handle points at the old contents.
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn appends_resumes_and_truncates() {
        let dir = std::env::temp_dir().join(format!("voxseg-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let mut w = JsonlWriter::open(&path).unwrap();
        w.write(&json!({"run": "r1"})).unwrap();
        for step in 1..=3u64 {
            w.write(&json!({"step": step, "loss": 1.0 / step as f64}))
                .unwrap();
        }
        assert!(w.write(&json!([1, 2])).is_err());
        // Each line is on disk before the writer is dropped.
        assert_eq!(lines(&path).len(), 4);
        drop(w);

        // A crash mid-line: the fragment is cut when the file is opened again.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\": 4, \"lo").unwrap();
        let mut w = JsonlWriter::open(&path).unwrap();
        w.write(&json!({"step": 4, "loss": 0.2})).unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], json!({"step": 4, "loss": 0.2}));

        w.truncate_after_step(2).unwrap();
        w.write(&json!({"step": 3, "loss": 0.3})).unwrap();
        let got = lines(&path);
        let steps: Vec<Option<u64>> = got.iter().map(|v| v["step"].as_u64()).collect();
        assert_eq!(steps, [None, Some(1), Some(2), Some(3)]);
        assert_eq!(got[3]["loss"], 0.3);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
