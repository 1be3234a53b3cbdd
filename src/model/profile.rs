//! Wall time per kind of operation in UNet forward passes, for `expanse bench --profile`. Off by
//! default (one relaxed atomic load per operation); CPU operations are synchronous, so the time
//! of a call is the time of its work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, OpTime>> = Mutex::new(BTreeMap::new());

/// What one kind of operation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpTime {
    pub seconds: f64,
    pub calls: usize,
    /// Floating-point operations (multiply-adds count two), where known.
    pub flops: f64,
}

/// Turns recording on or off (and clears the table when turning it on).
pub fn enable(on: bool) {
    if on {
        TABLE.lock().expect("profile table").clear();
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// Runs `f`, adding its wall time (and `flops`) to `op` when recording.
pub fn record<T>(op: &'static str, flops: f64, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed().as_secs_f64();
    let mut table = TABLE.lock().expect("profile table");
    let e = table.entry(op).or_default();
    e.seconds += dt;
    e.calls += 1;
    e.flops += flops;
    out
}

/// The recorded times, by operation.
pub fn table() -> BTreeMap<&'static str, OpTime> {
    TABLE.lock().expect("profile table").clone()
}
