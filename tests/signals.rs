//! A run's signal handler (remove the run's lock, then die of the signal) comes and goes with the
//! lock: the handlers in place before it are back after it, and a host that handles signals
//! itself (the Python module) keeps its own.

#[cfg(unix)]
fn handler(signal: libc::c_int) -> libc::sighandler_t {
    // SAFETY: queries the current action into a zeroed struct.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut action);
        action.sa_sigaction
    }
}

#[cfg(unix)]
#[test]
fn the_handlers_before_a_run_are_back_after_it() {
    use expanse::runtime::{leave_signals_to_the_host, remove_on_signal};
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(".lock");
    std::fs::write(&lock, "1").unwrap();
    // SAFETY: ignoring SIGTERM in this test process, the only test of this binary.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let before = handler(libc::SIGINT);

    remove_on_signal(Some(&lock));
    assert_ne!(handler(libc::SIGTERM), libc::SIG_IGN, "the run's handler is installed");
    assert_ne!(handler(libc::SIGINT), before);
    remove_on_signal(None);
    assert_eq!(handler(libc::SIGTERM), libc::SIG_IGN, "the handler before the run is back");
    assert_eq!(handler(libc::SIGINT), before);

    // Twice in a row, as a second run in one process does.
    remove_on_signal(Some(&lock));
    remove_on_signal(None);
    assert_eq!((handler(libc::SIGTERM), handler(libc::SIGINT)), (libc::SIG_IGN, before));

    leave_signals_to_the_host();
    remove_on_signal(Some(&lock));
    assert_eq!((handler(libc::SIGTERM), handler(libc::SIGINT)), (libc::SIG_IGN, before), "the host's handlers stay");
    remove_on_signal(None);
    assert!(lock.exists(), "nothing removed it");
}
