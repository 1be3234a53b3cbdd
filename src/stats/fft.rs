//! A 2-D FFT on a row-major grid with rustfft, shared by the Fourier statistics.

use std::sync::Arc;

use rustfft::{num_complex::Complex, Fft, FftPlanner};

/// 2-D FFT of a row-major ny × nx grid. Fourier arrays are kept transposed (nx × ny, `kx·ny + ky`) so
/// that each transform needs a single transposition; inverse transforms are unnormalised.
pub(crate) struct Fft2d {
    pub(crate) ny: usize,
    pub(crate) nx: usize,
    rows_forward: Arc<dyn Fft<f64>>,
    rows_inverse: Arc<dyn Fft<f64>>,
    cols_forward: Arc<dyn Fft<f64>>,
    cols_inverse: Arc<dyn Fft<f64>>,
}

impl Fft2d {
    pub(crate) fn new(planner: &mut FftPlanner<f64>, ny: usize, nx: usize) -> Fft2d {
        Fft2d {
            ny,
            nx,
            rows_forward: planner.plan_fft_forward(nx),
            rows_inverse: planner.plan_fft_inverse(nx),
            cols_forward: planner.plan_fft_forward(ny),
            cols_inverse: planner.plan_fft_inverse(ny),
        }
    }

    pub(crate) fn scratch_len(&self) -> usize {
        [&self.rows_forward, &self.rows_inverse, &self.cols_forward, &self.cols_inverse]
            .iter()
            .map(|f| f.get_inplace_scratch_len())
            .max()
            .unwrap_or(0)
    }

    /// Spatial grid (ny × nx, overwritten) → Fourier layout (nx × ny) in `fourier`.
    pub(crate) fn forward(
        &self,
        space: &mut [Complex<f64>],
        fourier: &mut [Complex<f64>],
        scratch: &mut [Complex<f64>],
    ) {
        let rows_scratch = self.rows_forward.get_inplace_scratch_len();
        self.rows_forward.process_with_scratch(space, &mut scratch[..rows_scratch]);
        transpose(space, fourier, self.ny, self.nx);
        let cols_scratch = self.cols_forward.get_inplace_scratch_len();
        self.cols_forward.process_with_scratch(fourier, &mut scratch[..cols_scratch]);
    }

    /// Fourier layout (nx × ny, overwritten) → unnormalised inverse on the spatial grid (ny × nx).
    pub(crate) fn inverse(
        &self,
        fourier: &mut [Complex<f64>],
        space: &mut [Complex<f64>],
        scratch: &mut [Complex<f64>],
    ) {
        let cols_scratch = self.cols_inverse.get_inplace_scratch_len();
        self.cols_inverse.process_with_scratch(fourier, &mut scratch[..cols_scratch]);
        transpose(fourier, space, self.nx, self.ny);
        let rows_scratch = self.rows_inverse.get_inplace_scratch_len();
        self.rows_inverse.process_with_scratch(space, &mut scratch[..rows_scratch]);
    }
}

/// Writes the transpose of a row-major rows × cols matrix into `out` (cols × rows).
fn transpose(input: &[Complex<f64>], out: &mut [Complex<f64>], rows: usize, cols: usize) {
    const BLOCK: usize = 16;
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = input[r * cols + c];
                }
            }
        }
    }
}
