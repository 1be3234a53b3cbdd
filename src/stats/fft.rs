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
        self.forward_rows(space, fourier, scratch, 0..self.ny);
    }

    /// Fourier layout (nx × ny, overwritten) → unnormalised inverse on the spatial grid (ny × nx).
    pub(crate) fn inverse(
        &self,
        fourier: &mut [Complex<f64>],
        space: &mut [Complex<f64>],
        scratch: &mut [Complex<f64>],
    ) {
        self.inverse_rows(fourier, space, scratch, 0..self.ny);
    }

    /// [`forward`](Self::forward) of a grid that is zero outside rows `rows`: the zero rows'
    /// transforms (zero) are not computed. The same result, bit for bit.
    pub(crate) fn forward_rows(
        &self,
        space: &mut [Complex<f64>],
        fourier: &mut [Complex<f64>],
        scratch: &mut [Complex<f64>],
        rows: std::ops::Range<usize>,
    ) {
        let rows_scratch = self.rows_forward.get_inplace_scratch_len();
        let band = &mut space[rows.start * self.nx..rows.end * self.nx];
        self.rows_forward.process_with_scratch(band, &mut scratch[..rows_scratch]);
        transpose_columns(space, fourier, self.ny, self.nx, 0..self.nx);
        let cols_scratch = self.cols_forward.get_inplace_scratch_len();
        self.cols_forward.process_with_scratch(fourier, &mut scratch[..cols_scratch]);
    }

    /// [`inverse`](Self::inverse) where only rows `rows` of the result are wanted: the others are
    /// left unspecified. Those rows bit for bit as `inverse` gives them.
    pub(crate) fn inverse_rows(
        &self,
        fourier: &mut [Complex<f64>],
        space: &mut [Complex<f64>],
        scratch: &mut [Complex<f64>],
        rows: std::ops::Range<usize>,
    ) {
        let cols_scratch = self.cols_inverse.get_inplace_scratch_len();
        self.cols_inverse.process_with_scratch(fourier, &mut scratch[..cols_scratch]);
        transpose_columns(fourier, space, self.nx, self.ny, rows.clone());
        let rows_scratch = self.rows_inverse.get_inplace_scratch_len();
        let band = &mut space[rows.start * self.nx..rows.end * self.nx];
        self.rows_inverse.process_with_scratch(band, &mut scratch[..rows_scratch]);
    }
}

/// Writes the transpose of a row-major rows × cols matrix into `out` (cols × rows), for the input's
/// columns `columns` only: rows `columns` of `out`.
fn transpose_columns(
    input: &[Complex<f64>],
    out: &mut [Complex<f64>],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
) {
    const BLOCK: usize = 16;
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in columns.clone().step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(columns.end) {
                    out[c * rows + r] = input[r * cols + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(ny: usize, nx: usize, rows: std::ops::Range<usize>) -> Vec<Complex<f64>> {
        (0..ny * nx)
            .map(|i| {
                let v = if rows.contains(&(i / nx)) { ((i * 7919 % 1013) as f64 * 0.01).sin() } else { 0.0 };
                Complex::new(v, (i % 7) as f64 * v)
            })
            .collect()
    }

    /// The row-restricted transforms give the full ones' bits where they promise to.
    #[test]
    fn restricted_transforms_are_the_full_ones() {
        let (ny, nx) = (24, 40);
        let fft = Fft2d::new(&mut FftPlanner::new(), ny, nx);
        let mut scratch = vec![Complex::new(0.0, 0.0); fft.scratch_len()];
        let rows = 5..19;
        let (mut a, mut b) = (grid(ny, nx, rows.clone()), grid(ny, nx, rows.clone()));
        let (mut fa, mut fb) = (vec![Complex::new(0.0, 0.0); ny * nx], vec![Complex::new(0.0, 0.0); ny * nx]);
        fft.forward(&mut a, &mut fa, &mut scratch);
        fft.forward_rows(&mut b, &mut fb, &mut scratch, rows.clone());
        assert_eq!(fa, fb);
        let (mut sa, mut sb) = (vec![Complex::new(0.0, 0.0); ny * nx], vec![Complex::new(0.0, 0.0); ny * nx]);
        fft.inverse(&mut fa, &mut sa, &mut scratch);
        fft.inverse_rows(&mut fb, &mut sb, &mut scratch, rows.clone());
        assert_eq!(sa[rows.start * nx..rows.end * nx], sb[rows.start * nx..rows.end * nx]);
        assert!(sa.iter().zip(&grid(ny, nx, rows)).all(|(x, y)| (x / (ny * nx) as f64 - y).norm() < 1e-12));
    }
}
