//! What the running process shows and measures: progress bars, peak memory, and its worker
//! threads.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar of `total` steps labelled `what`, with rate, elapsed time and ETA, drawn on a
/// terminal. When stderr is not a terminal (a batch job's log) it prints instead a line every
/// `EXPANSE_PROGRESS_SECONDS` seconds (default 30) while the work goes on.
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:32}] {pos}/{len} steps {rate} elapsed {elapsed} eta {eta}")
            .expect("valid template")
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", rate(state.per_sec()));
            })
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let every = std::env::var("EXPANSE_PROGRESS_SECONDS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s >= 0.0)
            .unwrap_or(30.0);
        log_progress(pb.downgrade(), what.to_string(), std::time::Duration::from_secs_f64(every));
    }
    pb
}

/// Steps per second as people read them: `28.8/s` above one, `0.35/s` below.
pub fn rate(per_second: f64) -> String {
    if !per_second.is_finite() {
        "-/s".into()
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{per_second:.2}/s")
    }
}

/// Prints `what`'s progress to stderr every `every` until the bar is finished or dropped.
fn log_progress(bar: indicatif::WeakProgressBar, what: String, every: std::time::Duration) {
    std::thread::spawn(move || {
        let tick = std::time::Duration::from_millis(100).min(every.max(std::time::Duration::from_millis(10)));
        let mut last = std::time::Instant::now();
        loop {
            std::thread::sleep(tick);
            let Some(pb) = bar.upgrade() else { return };
            if pb.is_finished() {
                return;
            }
            if last.elapsed() < every {
                continue;
            }
            last = std::time::Instant::now();
            let (pos, len) = (pb.position(), pb.length().unwrap_or(0));
            let eta = if pos > 0 { format!(", about {:.0} s left", pb.eta().as_secs_f64()) } else { String::new() };
            eprintln!(
                "{what}: {pos}/{len} steps ({:.0} %), {:.0} s elapsed{eta}",
                100.0 * pos as f64 / len.max(1) as f64,
                pb.elapsed().as_secs_f64()
            );
        }
    });
}

/// A duration for people: `42 s`, `3.5 min`, `2.1 h`.
pub fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// This machine's CPU, for benchmark reports: its model name (Linux), logical CPUs and the
/// vector instruction sets the kernels choose between, e.g. `AMD EPYC 9B14, 2 logical CPUs,
/// AVX-512 + AVX2 + FMA`.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines().find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sets: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            sets.push("AVX-512");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            sets.push("AVX2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            sets.push("FMA");
        }
    }
    let sets = if sets.is_empty() { "no AVX".to_string() } else { sets.join(" + ") };
    format!("{}, {cpus} logical CPUs, {sets}", model.unwrap_or_else(|| std::env::consts::ARCH.to_string()))
}

/// Peak resident memory of this process in MiB (Linux; None elsewhere).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Sets the number of worker threads of this process (rayon's pool, which expanse's kernels and
/// candle's CPU backend share, and candle's own count, which reads `RAYON_NUM_THREADS`). Call it
/// before any parallel work; a pool that already exists is an error.
pub fn set_threads(n: usize) -> crate::Result<()> {
    if n == 0 {
        return Err(crate::Error::Invalid("threads must be at least 1".into()));
    }
    // Set before any worker thread exists (candle reads it when it first counts its threads).
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| crate::Error::Invalid(format!("cannot set {n} threads: {e}")))
}

/// The worker threads in use.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Lets glibc's allocator keep freed memory for reuse (Linux with glibc; nothing elsewhere). By
/// default it serves every array above its mmap threshold (128 KiB, adapting up to 32 MiB) with
/// fresh pages and hands freed memory back to the system, so each layer output of a UNet forward
/// pays the kernel's page faults and zeroing again; with both thresholds at 1 GiB the pages stay.
/// Measured on the base model (batch 8, one thread) 97.9 → 87.4 ms and on the 256² DDPM
/// architecture (two threads) 4208 → 3502 ms, for a few percent more peak memory (BENCHMARKS.md).
/// A `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` set in the environment wins. Call it
/// once, first thing in `main`. Returns whether glibc took both settings: mallopt answers 0 for a
/// value it refuses (older glibc documents a 32 MiB cap on the mmap threshold on 64-bit; glibc
/// 2.36 here accepts 1 GiB, and the unit test below checks that it does).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before other threads
        // exist and with valid parameter numbers and values.
        let (mmap, trim) =
            unsafe { (libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30), libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30)) };
        return mmap == 1 && trim == 1;
    }
    false
}

/// Gives the pages of freed allocations back to the system (glibc's `malloc_trim`). The thresholds
/// [`keep_freed_memory`] sets keep them for speed, so that a set of maps dropped map by map would
/// stay in the peak while the next one is allocated: the steps that hold whole sets call this where
/// they have just dropped a large part of one. A no-op elsewhere.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it takes the allocator's locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The file removed when SIGTERM or SIGINT ends the process (a run folder's `.lock`); null when
/// none. The C strings it points to are leaked on purpose: the handler may read one at any time.
#[cfg(unix)]
static REMOVE_ON_SIGNAL: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// What to say when SIGTERM or SIGINT ends the process: a log file to append a line to (null:
/// none) and the message (a NUL-terminated line); leaked on purpose, as above.
#[cfg(unix)]
static LOG_ON_SIGNAL: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
#[cfg(unix)]
static MESSAGE_ON_SIGNAL: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// `YYYY-MM-DDTHH:MM:SSZ` of `secs` since 1970 in UTC, without allocating (a signal handler
/// formats it).
pub fn utc_stamp(secs: u64) -> [u8; 20] {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.max(0) as u64);
    put(5, 2, m as u64);
    put(8, 2, d as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    out
}

#[cfg(unix)]
fn write_all(fd: libc::c_int, bytes: &[u8]) {
    // SAFETY: write is async-signal-safe; the pointer and length describe `bytes`.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

#[cfg(unix)]
extern "C" fn remove_and_die(signal: libc::c_int) {
    let path = REMOVE_ON_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
    let log = LOG_ON_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
    let message = MESSAGE_ON_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
    let what: &[u8] = if signal == libc::SIGINT { b"interrupted (Ctrl-C, SIGINT): " } else { b"stopped by SIGTERM: " };
    // SAFETY: unlink, write, open, close, clock_gettime, signal and raise are async-signal-safe;
    // the pointers are null or leaked, never-freed C strings; nothing allocates.
    unsafe {
        if !message.is_null() {
            let text = std::ffi::CStr::from_ptr(message).to_bytes();
            write_all(2, b"\n");
            write_all(2, what);
            write_all(2, text);
            write_all(2, b"\n");
            if !log.is_null() {
                let fd = libc::open(log, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o644);
                if fd >= 0 {
                    let mut ts: libc::timespec = std::mem::zeroed();
                    libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
                    write_all(fd, &utc_stamp(ts.tv_sec.max(0) as u64));
                    write_all(fd, b"  ");
                    write_all(fd, what);
                    write_all(fd, text);
                    write_all(fd, b"\n");
                    libc::close(fd);
                }
            }
        }
        if !path.is_null() {
            libc::unlink(path);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Whether the program that embeds the library handles SIGINT and SIGTERM itself (the Python
/// module: Ctrl-C is Python's KeyboardInterrupt), so that [`remove_on_signal`] installs nothing.
#[cfg(unix)]
static HOST_HANDLES_SIGNALS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The SIGTERM and SIGINT actions in place before [`remove_on_signal`] installed its handler,
/// restored when it forgets its path; `None` while its handler is not installed.
#[cfg(unix)]
static PREVIOUS_ACTIONS: std::sync::Mutex<Option<[libc::sigaction; 2]>> = std::sync::Mutex::new(None);

/// Leaves SIGINT and SIGTERM to the program that embeds the library (the Python module calls
/// this when imported): a run's lock is then removed when the run ends, not on a signal, and the
/// host's own handlers (KeyboardInterrupt) stay in place.
pub fn leave_signals_to_the_host() {
    #[cfg(unix)]
    HOST_HANDLES_SIGNALS.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Removes `path` if SIGTERM or SIGINT (Ctrl-C, `scancel`, a batch system's time limit) ends the
/// process, which then dies of that signal as it would have; `None` forgets it (and the message
/// of [`say_on_signal`]) and puts back the handlers that were there before. Only one path is kept
/// (the latest). Nothing can run on SIGKILL (`kill -9`).
pub fn remove_on_signal(path: Option<&std::path::Path>) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = path.and_then(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok());
        let ptr = c.map_or(std::ptr::null_mut(), |c| c.into_raw());
        REMOVE_ON_SIGNAL.store(ptr, std::sync::atomic::Ordering::SeqCst);
        if path.is_none() {
            MESSAGE_ON_SIGNAL.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
            LOG_ON_SIGNAL.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
        }
        let mut previous = PREVIOUS_ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
        let signals = [libc::SIGTERM, libc::SIGINT];
        match (path, previous.as_ref()) {
            (Some(_), None) if !HOST_HANDLES_SIGNALS.load(std::sync::atomic::Ordering::SeqCst) => {
                // SAFETY: sigaction with a zeroed, then filled action and a valid out-pointer; the
                // handler only calls async-signal-safe functions.
                unsafe {
                    let mut ours: libc::sigaction = std::mem::zeroed();
                    ours.sa_sigaction = remove_and_die as *const () as libc::sighandler_t;
                    libc::sigemptyset(&mut ours.sa_mask);
                    let mut old: [libc::sigaction; 2] = std::mem::zeroed();
                    for (signal, old) in signals.iter().zip(old.iter_mut()) {
                        libc::sigaction(*signal, &ours, old);
                    }
                    *previous = Some(old);
                }
            }
            (None, Some(old)) => {
                // SAFETY: restores the actions sigaction gave back above.
                unsafe {
                    for (signal, old) in signals.iter().zip(old.iter()) {
                        libc::sigaction(*signal, old, std::ptr::null_mut());
                    }
                }
                *previous = None;
            }
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// When SIGTERM or SIGINT ends the process (after [`remove_on_signal`] installed the handler),
/// print `message` on stderr after what stopped it, and append it to `log` as a timestamped line.
pub fn say_on_signal(log: &std::path::Path, message: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let log = std::ffi::CString::new(log.as_os_str().as_bytes()).ok();
        let message = std::ffi::CString::new(message.replace('\0', "")).ok();
        LOG_ON_SIGNAL.store(log.map_or(std::ptr::null_mut(), |c| c.into_raw()), std::sync::atomic::Ordering::SeqCst);
        MESSAGE_ON_SIGNAL
            .store(message.map_or(std::ptr::null_mut(), |c| c.into_raw()), std::sync::atomic::Ordering::SeqCst);
    }
    #[cfg(not(unix))]
    let _ = (log, message);
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_are_civil_utc() {
        assert_eq!(&super::utc_stamp(0), b"1970-01-01T00:00:00Z");
        assert_eq!(&super::utc_stamp(951_782_400), b"2000-02-29T00:00:00Z");
        assert_eq!(&super::utc_stamp(1_796_601_599), b"2026-12-06T23:59:59Z");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_allocator_settings() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        {
            assert!(super::keep_freed_memory(), "mallopt refused a threshold: keep_freed_memory is a no-op here");
        }
    }

    #[test]
    fn rates_and_durations_read_as_people_write_them() {
        assert_eq!(super::rate(28.786_8), "28.8/s");
        assert_eq!(super::rate(0.3456), "0.35/s");
        assert_eq!(super::rate(f64::INFINITY), "-/s");
        assert_eq!(super::duration(42.4), "42 s");
        assert_eq!(super::duration(210.0), "3.5 min");
        assert_eq!(super::duration(7560.0), "2.1 h");
    }
}
