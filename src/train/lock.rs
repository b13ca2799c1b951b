//! One training at a time per run folder: two processes writing one run's checkpoints,
//! config and metrics would each overwrite the other's files without a word. The lock is a
//! file holding the owner's process id; a lock whose process is gone (a training killed
//! with SIGKILL) is taken over.
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = ".voxseg-train.lock";

/// Held while a training writes its run folder; removes its file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run`, or says which process holds it.
    pub fn acquire(run: &Path) -> Result<RunLock> {
        let path = run.join(LOCK_FILE);
        let ours = std::process::id();
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(format!("{ours}\n").as_bytes())
                        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid != ours && process_alive(pid) => {
                            return Err(Error::config(
                                "out",
                                format!(
                                    "{} is in use by another voxseg train (process {pid}); \
                                     wait for it to end or stop it (if no training runs \
                                     there, remove {})",
                                    run.display(),
                                    path.display()
                                ),
                            ))
                        }
                        // Its process is gone, or the file is unreadable: stale.
                        _ => {
                            std::fs::remove_file(&path).map_err(|e| {
                                Error::io(format!("removing the stale {}", path.display()), e)
                            })?;
                        }
                    }
                }
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
        Err(Error::config(
            "out",
            format!("{}: another process keeps taking the lock", path.display()),
        ))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` exists. Where that cannot be told, it is taken to exist: the user
/// is then asked to remove a stale lock rather than two trainings sharing a folder.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Removes the temporary files of atomic writes (`.NAME.PID.tmp`) that a killed process
/// left in `dir`: each is a whole checkpoint's size, and no write of them is in flight
/// while the run's lock is held.
pub fn remove_stale_temp_files(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_file(&name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

/// Whether `name` is an atomic write's temporary file (`crate::atomic`: `.NAME.PID.tmp`).
pub fn is_temp_file(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    inner
        .rsplit_once('.')
        .is_some_and(|(base, pid)| !base.is_empty() && pid.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_live_owner_keeps_the_lock_and_a_dead_ones_is_taken_over() {
        let dir = temp_dir("owners");
        let lock = RunLock::acquire(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        // Process 1 (init) is alive on Linux: the lock is refused, naming it.
        if cfg!(target_os = "linux") {
            std::fs::write(dir.join(LOCK_FILE), "1\n").unwrap();
            let err = RunLock::acquire(&dir).unwrap_err().to_string();
            assert!(err.contains("another voxseg train (process 1)"), "{err}");
        }
        // A process id no process has (above Linux's pid_max) and an unreadable file are
        // stale.
        for stale in ["4294967295\n", "garbage"] {
            std::fs::write(dir.join(LOCK_FILE), stale).unwrap();
            let lock = RunLock::acquire(&dir).unwrap();
            let held = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
            assert_eq!(held.trim(), std::process::id().to_string());
            drop(lock);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_atomic_writes_temporary_files_are_removed() {
        let dir = temp_dir("temps");
        for name in [
            ".last.safetensors.123.tmp",
            ".config.json.9.tmp",
            "keep.tmp",
            ".a.tmp",
            "x",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        remove_stale_temp_files(&dir).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".a.tmp", "keep.tmp", "x"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
