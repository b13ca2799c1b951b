//! Ctrl-C (SIGINT), and SIGTERM and SIGHUP, which `timeout`, `kill`, cluster time limits and
//! `docker stop` send. While a loop polls for it (training, which then saves its state and returns),
//! it is only noted. Otherwise the process ends at once with 128 + the signal's number, as a
//! shell reports a command that signal stopped (130 for Ctrl-C, 143 for SIGTERM, 129 for
//! SIGHUP), first removing the temporary files of the atomic writes in flight, so an
//! interrupted command leaves no partial file behind.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static POLLERS: AtomicUsize = AtomicUsize::new(0);
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
/// The last of the handled signals to arrive; SIGINT (2) until one does.
static SIGNAL: AtomicI32 = AtomicI32::new(2);

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        let hangup_ignored = hangup_ignored();
        // Fails only where another handler was installed first; that one then decides.
        if ctrlc::set_handler(on_interrupt).is_ok() {
            which_signal::record_each();
        }
        if hangup_ignored {
            ignore_hangup();
        }
    });
}

/// The exit status of a command an interruption ended: 128 + the signal, as a shell
/// reports it.
pub fn exit_status() -> i32 {
    128 + SIGNAL.load(Ordering::SeqCst)
}

/// ctrlc runs one handler for every signal it takes and does not say which arrived, so each
/// of its signal handlers is wrapped in one that first records the signal (an atomic store,
/// safe in a signal handler) and then calls it.
#[cfg(target_os = "linux")]
mod which_signal {
    use super::SIGNAL;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    /// ctrlc's handler of each of `SIGNALS` (a plain `fn(c_int)`), 0 where there is none.
    static WRAPPED: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

    pub(super) fn record_each() {
        for (i, &signal) in SIGNALS.iter().enumerate() {
            // SAFETY: sigaction reads the current action into `old` (a null new action
            // changes nothing); the new one is `record`, which is async-signal-safe and
            // calls the old handler only where it is a plain one (not SA_SIGINFO).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                    || old.sa_flags & libc::SA_SIGINFO != 0
                    || old.sa_sigaction == libc::SIG_DFL
                    || old.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                WRAPPED[i].store(old.sa_sigaction, Ordering::SeqCst);
                let mut wrapper = old;
                wrapper.sa_sigaction = record as extern "C" fn(libc::c_int) as usize;
                if libc::sigaction(signal, &wrapper, std::ptr::null_mut()) != 0 {
                    WRAPPED[i].store(0, Ordering::SeqCst);
                }
            }
        }
    }

    extern "C" fn record(signal: libc::c_int) {
        SIGNAL.store(signal, Ordering::SeqCst);
        if let Some(i) = SIGNALS.iter().position(|&s| s == signal) {
            let handler = WRAPPED[i].load(Ordering::SeqCst);
            if handler != 0 {
                // SAFETY: a plain handler that sigaction returned for this signal.
                let handler =
                    unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(handler) };
                handler(signal);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod which_signal {
    pub(super) fn record_each() {}
}

/// Whether SIGHUP is ignored, as `nohup` leaves it: a training started so must outlive the
/// terminal, so the handler (which also takes SIGHUP) gives it back.
#[cfg(target_os = "linux")]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(target_os = "linux")]
fn ignore_hangup() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no code.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

#[cfg(not(target_os = "linux"))]
fn hangup_ignored() -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
fn ignore_hangup() {}

fn on_interrupt() {
    if POLLERS.load(Ordering::SeqCst) > 0 {
        REQUESTED.store(true, Ordering::SeqCst);
        return;
    }
    // Held until the exit: a write that has not registered its file yet cannot start one.
    let mut in_flight = lock();
    for tmp in in_flight.drain(..) {
        let _ = std::fs::remove_file(tmp);
    }
    eprintln!("interrupted");
    std::process::exit(exit_status());
}

/// While one lives, Ctrl-C is noted for [`requested`] instead of ending the process.
pub struct Polling(());

impl Polling {
    /// Starts polling, forgetting any earlier request.
    pub fn start() -> Self {
        REQUESTED.store(false, Ordering::SeqCst);
        POLLERS.fetch_add(1, Ordering::SeqCst);
        Polling(())
    }

    /// Whether Ctrl-C was pressed since polling started.
    pub fn requested(&self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A temporary file being written, removed by an interruption until dropped.
pub(crate) struct InFlight(PathBuf);

impl InFlight {
    /// Registers `tmp` before it is created.
    pub(crate) fn register(tmp: &Path) -> Self {
        lock().push(tmp.to_path_buf());
        InFlight(tmp.to_path_buf())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = lock();
        if let Some(i) = in_flight.iter().position(|p| *p == self.0) {
            in_flight.swap_remove(i);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_flight_are_registered_until_dropped() {
        let tmp = Path::new("/nonexistent/.a.tmp");
        let held = |p: &Path| lock().iter().any(|q| q == p);
        let guard = InFlight::register(tmp);
        assert!(held(tmp));
        drop(guard);
        assert!(!held(tmp));
    }
}
