//! Fast CPU kernels for the UNet (f32, contiguous NCHW), one file per kind: convolutions
//! (`conv.rs`: stride-1 convolutions as a direct AVX-512 kernel where the CPU has it, `direct.rs`;
//! the others, and all of them elsewhere, as im2col of row tiles into per-task buffers multiplied by
//! the `gemm` crate straight into the output, 1×1 convolutions as plain products), GroupNorm fused
//! with the SiLU that follows it (`norm.rs`), spatial self-attention (`attention.rs`), channel
//! concatenation and upsampling (`layout.rs`), and the element loops compiled for each SIMD level
//! (`simd.rs`). Here: the switch, the fast exp and SiLU, and the one pattern every parallel kernel
//! shares ([`SharedMut`]).
//!
//! Work is split into tasks (one image × one tile of output rows, or one image × channel group)
//! run on rayon's pool; every task computes its outputs with single-threaded arithmetic in a
//! fixed order, so results do not depend on the number of threads. Other devices and dtypes keep
//! candle's own operations (see [`super::unet`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether CPU f32 models use these kernels (the default) or candle's own operations (for
/// comparisons and parity checks).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    static BF16_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `build` (a model's constructor) so that the stride-1 convolutions and the attention
/// products it makes run in bfloat16 ([`CpuConv2d::to_bf16`], [`CpuAttention::to_bf16`]); every
/// other layer stays f32. The setting holds for this thread until `build` returns.
pub fn with_bf16_kernels<T>(build: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BF16_KERNELS.set(self.0);
        }
    }
    let _reset = Reset(BF16_KERNELS.replace(true));
    build()
}

/// Whether kernels made now are to run in bfloat16 (inside [`with_bf16_kernels`]).
pub fn bf16_kernels() -> bool {
    BF16_KERNELS.get()
}

mod attention;
mod conv;
#[cfg(target_arch = "x86_64")]
mod direct;
mod layout;
mod norm;
mod simd;

pub use attention::CpuAttention;
pub use conv::{bf16_available, conv_output_size, direct_available, ConvAdd, CpuConv2d, Epilogue};
pub use layout::{ChannelConcat, Upsample2x};
pub use norm::{CpuGroupNorm, GroupNormOp, GroupNormScaleShift};

/// (B, C, H, W).
pub type Dims4 = (usize, usize, usize, usize);

/// A raw pointer that tasks writing disjoint parts of one output may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: a SharedMut is only made for an output buffer that outlives the parallel section using
// it (the section joins before the buffer is read or dropped), and every task writes a disjoint
// range of it (its own image, channels and rows), so no two threads touch one element.
unsafe impl Send for SharedMut {}
// SAFETY: as for Send: shared references only hand the pointer to tasks with disjoint ranges.
unsafe impl Sync for SharedMut {}

fn input<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(candle_core::Error::Msg(format!("{what}: the CPU kernel takes f32 only")));
    };
    let (a, b) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    Ok(&data[a..b])
}

/// One single-threaded product dst (m × n) = beta·(dst + lhs (m × k) · rhs (k × n)) (the old dst
/// read only when `read_dst`), every matrix given by its pointer and (row, column) strides.
///
/// SAFETY: the pointers and strides must describe in-bounds matrices of those sizes, and dst must
/// not overlap the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, usize, usize),
    read_dst: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    // SAFETY: the caller's contract above is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            read_dst,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            beta,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// e^x for f32, branch-free so that loops over it vectorize: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// e^r by a degree-6 polynomial (Taylor, relative error < 2e-7 on that interval), times 2^n built
/// in the exponent bits. Inputs are clamped to [−87, 88] (e^x then stays a normal f32).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    // ln 2 split in a part exact in f32 and a remainder (Cody–Waite).
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    // Estrin's scheme: three short chains instead of one of depth six, so that the out-of-order
    // core overlaps them (2× faster than Horner's here).
    let r2 = r * r;
    let p = (1.0 + r) + r2 * ((0.5 + r * (1.0 / 6.0)) + r2 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0)));
    let bits = t.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// SiLU y·σ(y) with [`exp_f32`].
#[inline(always)]
pub fn silu_f32(y: f32) -> f32 {
    y / (1.0 + exp_f32(-y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_exp_is_within_a_few_ulp_of_the_library_one() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
        assert!((silu_f32(2.0) - 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
    }
}
