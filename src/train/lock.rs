//! One training at a time per run folder: two processes writing one run's checkpoints,
//! config and metrics would each overwrite the other's files without a word. The lock is an
//! advisory lock of the operating system on a file of the folder (`flock` on Linux), which
//! ends with its process however that ends (a SIGKILL included); the file holds the owner's
//! process id for the message a second training gets.
use crate::error::{Error, Result};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name in a run folder. It stays after the training: only the lock on it
/// says a training runs.
pub const LOCK_FILE: &str = ".voxseg-train.lock";

/// Held while a training writes its run folder; the lock ends when it is dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run`, or says which process holds it.
    pub fn acquire(run: &Path) -> Result<RunLock> {
        let path = run.join(LOCK_FILE);
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(|e| io("writing", e))?;
                file.rewind().map_err(|e| io("writing", e))?;
                file.write_all(format!("{}\n", std::process::id()).as_bytes())
                    .map_err(|e| io("writing", e))?;
                Ok(RunLock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = match owner.trim() {
                    "" => String::new(),
                    pid => format!(" (process {pid})"),
                };
                Err(Error::config(
                    "out",
                    format!(
                        "{} is in use by another voxseg train{owner}; wait for it to end or \
                         stop it",
                        run.display()
                    ),
                ))
            }
            // A file system without locks: train unguarded rather than not at all.
            Err(TryLockError::Error(e)) => {
                eprintln!(
                    "warning: {} cannot be locked ({e}): nothing stops a second training of \
                     this run folder meanwhile",
                    path.display()
                );
                Ok(RunLock { _file: file })
            }
        }
    }
}

/// Removes the temporary files of atomic writes (`.NAME.PID.tmp`, `crate::atomic`) that a
/// killed process left in `dir`: each is a whole checkpoint's size. A file whose process
/// still runs (another command writing into the folder) is left, as is every file where
/// that cannot be told.
pub fn remove_stale_temp_files(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if temp_file_pid(&name).is_some_and(|pid| !process_alive(pid)) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

/// Whether `name` is an atomic write's temporary file (`.NAME.PID.tmp`).
pub fn is_temp_file(name: &str) -> bool {
    temp_file_pid(name).is_some()
}

/// The process id in an atomic write's temporary file name.
fn temp_file_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, pid) = inner.rsplit_once('.')?;
    (!base.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Whether process `pid` exists; where that cannot be told, it is taken to exist.
fn process_alive(pid: u32) -> bool {
    pid == std::process::id()
        || !cfg!(target_os = "linux")
        || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_held_lock_refuses_a_second_taker_until_it_is_dropped() {
        let dir = temp_dir("owners");
        let held = RunLock::acquire(&dir).unwrap();
        let ours = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap().trim(),
            ours
        );
        // Another open file description conflicts, as another process's would.
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("in use by another voxseg train (process {ours})")),
            "{err}"
        );
        drop(held);
        // A lock left by a process that ended (its file remains) is free.
        let again = RunLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_dead_processes_temporary_files_are_removed() {
        let dir = temp_dir("temps");
        let ours = format!(".metrics.jsonl.{}.tmp", std::process::id());
        let names = [
            ".last.safetensors.4294967295.tmp",
            ".config.json.4294967294.tmp",
            ours.as_str(),
            "keep.tmp",
            ".a.tmp",
            "x",
        ];
        for name in names {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        remove_stale_temp_files(&dir).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![ours.clone(), ".a.tmp".into(), "keep.tmp".into(), "x".into()];
        if !cfg!(target_os = "linux") {
            want.extend([
                ".config.json.4294967294.tmp".to_string(),
                ".last.safetensors.4294967295.tmp".to_string(),
            ]);
        }
        want.sort();
        assert_eq!(left, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
