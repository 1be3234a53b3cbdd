//! Wavelet moments of a map, with their gradient: the statistics the refinement
//! ([`crate::refine`]) brings synthetic maps to.
//!
//! A map x (ny × nx) is extended by reflection (NumPy's mode 'reflect', 2^J pixels on each side,
//! so that the periodic convolutions see no jump at the map's edges: maps cut from larger fields
//! are not periodic) and convolved with oriented Morlet wavelets ψ_λ, λ = (j, t) for scales
//! j = 0…J−1 and angles θ_t = t·π/L, giving complex fields W_λ = x ⋆ ψ_λ and their moduli
//! M_λ = √(|W_λ|² + ε), averaged over the map's own pixels. The moments, in this order:
//!
//! 1. **pixels**: mean, and the central moments of order 2, 3 and 4 (the one-point PDF's shape);
//! 2. **power spectrum** of the padded map: ln of the mean |x̂(k)|²/n over rings of integer radius
//!    |k| = 1, 2, … up to the grid's corner (frequency-index units of the padded grid; every
//!    frequency but k = 0 is in one ring);
//! 3. **S1**: mean M_λ for every λ (how much structure each scale and orientation holds);
//! 4. **S2**: mean M_λ² for every λ;
//! 5. **C00 across scales**: covariance of M_(j,t) and M_(j+1,t): whether structure at one scale
//!    sits where the next scale's does;
//! 6. **C00 across angles**: covariance of M_(j,t) and M_(j,t+1) (angles cyclic): elongated
//!    structures light up one orientation, round ones all;
//! 7. **C01**: real and imaginary parts of the mean of M_(j,t)·W_(j+δ,t), δ = 1, 2: the phase of the
//!    coarse scale where the fine scale has its energy. Zero for Gaussian fields whatever their
//!    spectrum; filaments, edges and compact sources each give their own sign and phase. This is
//!    the moment of the wavelet phase harmonics (Allys et al. 2020; Régaldo-Saint Blancard et al.
//!    2023, the field's few-shot method) that carries coherent structures.
//! 8. **increments**, only [`WaveletMoments::with_increments`]: the means of √(d² + ε), d² and d⁴
//!    for the differences to the next pixel along x and y and for the five-point Laplacian, each
//!    where it stays on the map: how sparse the finest structure is.
//!
//! The wavelets are Morlet wavelets defined in Fourier space on the padded grid (frequencies k in
//! radians per pixel, every alias k + 2π·m with m ∈ {−1, 0, 1}² summed so that the filter is
//! smooth across the Nyquist frequency): ψ̂(k) = G(R_θ k − ξ_j e₁) − G(ξ_j e₁)·G(R_θ k) with
//! G(u, v) = exp(−σ_j²(u² + v²/s²)/2), σ_j = 0.8·2^j, ξ_j = (3π/4)/2^j and slant s = 4/L, as
//! kymatio's bank (σ, ξ and slant).
//!
//! [`WaveletMoments::loss_and_gradient`] gives Σ_k w_k (φ_k(x) − t_k)² and its exact gradient with
//! respect to every pixel, by the chain rule through the moduli and the convolutions (each
//! convolution's adjoint is the correlation with the same real Fourier filter, and the padding's
//! adjoint adds each copy's gradient to the pixel it copies). Parity:
//! tests/refine_parity.rs compares moments, loss and gradient with PyTorch's autograd on the same
//! definitions (tools/make_refine_fixtures.py).

use ndarray::{Array2, ArrayView2};
use rustfft::{num_complex::Complex, FftPlanner};

use crate::error::{Error, Result};
use crate::stats::fft::Fft2d;

/// The families of moments, in order: pixel moments, power spectrum, S1, S2, C00 (across scales and
/// angles), C01.
pub const FAMILIES: [&str; 7] = ["pixels", "power spectrum", "S1", "S2", "C00", "C01", "increments"];

/// The pixel-scale operators of the increments family: the difference to the next pixel along x and
/// along y, and the five-point Laplacian, each where it stays on the map.
pub const INCREMENT_OPERATORS: [&str; 3] = ["dx", "dy", "laplacian"];

/// The increments family's moments of each operator's field d: the mean of √(d² + ε), of d² and
/// of d⁴.
pub const INCREMENT_ORDERS: [&str; 3] = ["|d|", "d2", "d4"];

/// Added to |W|² under the square root of the modulus, so that its gradient stays finite.
pub const MODULUS_EPSILON: f64 = 1e-8;

/// The wavelet moments of maps of one shape: filter bank, ring masks and FFT plans.
pub struct WaveletMoments {
    ny: usize,
    nx: usize,
    j: usize,
    l: usize,
    /// The reflection-padded grid (py × px) the convolutions run on.
    py: usize,
    px: usize,
    /// For each padded pixel (row-major), the map pixel it copies; for each map pixel, its place on
    /// the padded grid.
    source: Vec<usize>,
    region: Vec<usize>,
    fft: Fft2d,
    /// Real Fourier filters in the FFT's layout (px × py, index kx·py + ky), λ = j·L + t.
    filters: Vec<Vec<f64>>,
    /// The same filters divided by the padded grid's size, as the gradient's adjoint uses them.
    adjoint_filters: Vec<Vec<f64>>,
    /// Ring of each Fourier index (None outside every ring), and pixels per ring.
    ring: Vec<Option<usize>>,
    ring_counts: Vec<f64>,
    /// (fine λ, coarse λ) pairs of the covariances and the C01 moments.
    scale_pairs: Vec<(usize, usize)>,
    angle_pairs: Vec<(usize, usize)>,
    phase_pairs: Vec<(usize, usize)>,
    /// Whether the moments end with the increments family.
    increments: bool,
}

impl std::fmt::Debug for WaveletMoments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WaveletMoments {{ {}x{}, J = {}, L = {}, {} moments }}",
            self.ny,
            self.nx,
            self.j,
            self.l,
            self.len()
        )
    }
}

/// The default number of scales for maps of `ny × nx`: ⌊log2 min(ny, nx)⌋ − 2 (at least 1), so the
/// coarsest wavelet (about 2^(J+1) pixels across) still fits a few times into the map.
pub fn default_scales(ny: usize, nx: usize) -> usize {
    let m = ny.min(nx).max(1);
    (m.ilog2() as usize).saturating_sub(2).max(1)
}

/// Signed frequency (radians per pixel) of FFT index `i` on an axis of `n` points.
fn frequency(i: usize, n: usize) -> f64 {
    let k = if i < n.div_ceil(2) { i as f64 } else { i as f64 - n as f64 };
    2.0 * std::f64::consts::PI * k / n as f64
}

/// Division by the number of pixels n, as a product where 1/n is exact (n a power of two, as
/// maps of 64² or 128² have): x·(1/n) and x/n are then both the rounding of the same number, so
/// the same bits, and a product is several times cheaper than a division.
#[derive(Clone, Copy)]
struct PerPixel {
    n: f64,
    exact_inverse: Option<f64>,
}

impl PerPixel {
    fn new(n: f64) -> PerPixel {
        let exact = n > 0.0 && n.to_bits().trailing_zeros() >= 52 && n.is_finite();
        PerPixel { n, exact_inverse: exact.then(|| 1.0 / n) }
    }

    #[inline(always)]
    fn of(self, x: f64) -> f64 {
        match self.exact_inverse {
            Some(r) => x * r,
            None => x / self.n,
        }
    }
}

/// A pixel-scale operator: at each place (y, x) of its rows × cols field, Σ w·x[y + dy, x + dx]
/// over its taps (dy, dx, w), which all stay on the map.
struct Stencil {
    taps: &'static [(usize, usize, f64)],
    rows: usize,
    cols: usize,
}

impl Stencil {
    /// The field's places, row-major.
    fn places(&self) -> impl Iterator<Item = (usize, usize)> {
        let cols = self.cols;
        (0..self.rows).flat_map(move |y| (0..cols).map(move |x| (y, x)))
    }
}

/// A forward pass: the Fourier transform of the padded map, every W_λ (complex) and M_λ on the
/// map's own pixels (row-major, ny·nx each), the only place the moments look at them, and the
/// increment operators' fields (when that family is on).
struct Fields {
    spectrum: Vec<Complex<f64>>,
    w: Vec<Vec<Complex<f64>>>,
    m: Vec<Vec<f64>>,
    increments: Vec<Vec<f64>>,
}

impl WaveletMoments {
    /// The moments of `ny × nx` maps with `j` scales and `l` angles.
    pub fn new(ny: usize, nx: usize, j: usize, l: usize) -> Result<WaveletMoments> {
        if ny < 8 || nx < 8 {
            return Err(Error::Invalid(format!("wavelet moments need maps of at least 8x8 pixels, got {ny}x{nx}")));
        }
        if j == 0 || l == 0 {
            return Err(Error::Invalid(format!(
                "wavelet moments need at least one scale and one angle (J = {j}, L = {l})"
            )));
        }
        if 1usize << j > ny.min(nx) {
            return Err(Error::Invalid(format!(
                "{j} wavelet scales need maps of at least {} pixels a side, got {ny}x{nx}",
                1usize << j
            )));
        }
        // Reflect (without repeating the edge, as NumPy's mode 'reflect') by up to 2^J pixels.
        let (pad_y, pad_x) = ((1usize << j).min(ny - 1), (1usize << j).min(nx - 1));
        let (py, px) = (ny + 2 * pad_y, nx + 2 * pad_x);
        let reflect = |i: isize, n: usize| -> usize {
            let n = n as isize;
            (if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            }) as usize
        };
        let mut source = Vec::with_capacity(py * px);
        for r in 0..py {
            for c in 0..px {
                let (y, x) = (reflect(r as isize - pad_y as isize, ny), reflect(c as isize - pad_x as isize, nx));
                source.push(y * nx + x);
            }
        }
        let region = (0..ny).flat_map(|y| (0..nx).map(move |x| (y + pad_y) * px + x + pad_x)).collect();
        let mut planner = FftPlanner::new();
        let fft = Fft2d::new(&mut planner, py, px);
        let slant = 4.0 / l as f64;
        let two_pi = 2.0 * std::f64::consts::PI;
        let mut filters = Vec::with_capacity(j * l);
        for scale in 0..j {
            let sigma = 0.8 * (1u64 << scale) as f64;
            let xi = 0.75 * std::f64::consts::PI / (1u64 << scale) as f64;
            let envelope_at_xi = (-sigma * sigma * xi * xi / 2.0).exp();
            for t in 0..l {
                let theta = t as f64 * std::f64::consts::PI / l as f64;
                let (sin, cos) = theta.sin_cos();
                let mut filter = vec![0.0; py * px];
                for ix in 0..px {
                    for iy in 0..py {
                        let mut value = 0.0;
                        for my in -1..=1 {
                            for mx in -1..=1 {
                                let kx = frequency(ix, px) + two_pi * mx as f64;
                                let ky = frequency(iy, py) + two_pi * my as f64;
                                let u = kx * cos + ky * sin;
                                let v = -kx * sin + ky * cos;
                                let across = v * v / (slant * slant);
                                value += (-sigma * sigma * ((u - xi).powi(2) + across) / 2.0).exp()
                                    - envelope_at_xi * (-sigma * sigma * (u * u + across) / 2.0).exp();
                            }
                        }
                        filter[ix * py + iy] = value;
                    }
                }
                filters.push(filter);
            }
        }
        // Rings up to the corner of the Fourier grid, so that no frequency is left free.
        let rings = (((py / 2).pow(2) + (px / 2).pow(2)) as f64).sqrt().round() as usize;
        let mut ring = vec![None; py * px];
        let mut ring_counts = vec![0.0; rings];
        for ix in 0..px {
            for iy in 0..py {
                let (fy, fx) = (frequency(iy, py) * py as f64 / two_pi, frequency(ix, px) * px as f64 / two_pi);
                let r = (fy * fy + fx * fx).sqrt().round() as usize;
                if (1..=rings).contains(&r) {
                    ring[ix * py + iy] = Some(r - 1);
                    ring_counts[r - 1] += 1.0;
                }
            }
        }
        let index = |scale: usize, t: usize| scale * l + t % l;
        let mut scale_pairs = Vec::new();
        let mut angle_pairs = Vec::new();
        let mut phase_pairs = Vec::new();
        for scale in 0..j {
            for t in 0..l {
                if scale + 1 < j {
                    scale_pairs.push((index(scale, t), index(scale + 1, t)));
                }
                if l > 1 {
                    angle_pairs.push((index(scale, t), index(scale, t + 1)));
                }
                for d in 1..=2 {
                    if scale + d < j {
                        phase_pairs.push((index(scale, t), index(scale + d, t)));
                    }
                }
            }
        }
        let n_pad = (py * px) as f64;
        let adjoint_filters = filters.iter().map(|f| f.iter().map(|v| v / n_pad).collect()).collect();
        Ok(WaveletMoments {
            ny,
            nx,
            j,
            l,
            py,
            px,
            source,
            region,
            fft,
            filters,
            adjoint_filters,
            ring,
            ring_counts,
            scale_pairs,
            angle_pairs,
            phase_pairs,
            increments: false,
        })
    }

    /// The same moments followed (or not) by the increments family: the moments of the map's
    /// pixel-scale differences and Laplacian ([`INCREMENT_OPERATORS`], [`INCREMENT_ORDERS`]), which
    /// see how sparse the finest structure is (sharp edges and thin ridges against smooth ground)
    /// at frequencies the wavelets leave to the power spectrum.
    pub fn with_increments(mut self, on: bool) -> WaveletMoments {
        self.increments = on;
        self
    }

    /// Number of increments moments (0 when the family is off).
    fn increment_len(&self) -> usize {
        if self.increments {
            INCREMENT_OPERATORS.len() * INCREMENT_ORDERS.len()
        } else {
            0
        }
    }

    /// Each increment operator's field where it stays on the map, row-major (none when the family
    /// is off).
    fn increment_fields(&self, map: ArrayView2<f64>) -> Vec<Vec<f64>> {
        if !self.increments {
            return Vec::new();
        }
        (0..INCREMENT_OPERATORS.len())
            .map(|o| {
                let stencil = self.increment_stencil(o);
                let tap = |(y, x): (usize, usize), &(dy, dx, w): &(usize, usize, f64)| w * map[[y + dy, x + dx]];
                stencil.places().map(|at| stencil.taps.iter().map(|t| tap(at, t)).sum::<f64>()).collect()
            })
            .collect()
    }

    /// Adds the adjoint of increment operator `o` applied to `c` (one value per place of its
    /// field) to `grad`.
    fn add_increment_adjoint(&self, o: usize, c: &[f64], grad: &mut Array2<f64>) {
        let stencil = self.increment_stencil(o);
        for ((y, x), &v) in stencil.places().zip(c) {
            for &(dy, dx, w) in stencil.taps {
                grad[[y + dy, x + dx]] += w * v;
            }
        }
    }

    /// Increment operator `o` ([`INCREMENT_OPERATORS`]) as a stencil on this map shape.
    fn increment_stencil(&self, o: usize) -> Stencil {
        let (ny, nx) = (self.ny, self.nx);
        match o {
            0 => Stencil { taps: &[(0, 1, 1.0), (0, 0, -1.0)], rows: ny, cols: nx - 1 },
            1 => Stencil { taps: &[(1, 0, 1.0), (0, 0, -1.0)], rows: ny - 1, cols: nx },
            _ => Stencil {
                taps: &[(1, 2, 1.0), (1, 0, 1.0), (2, 1, 1.0), (0, 1, 1.0), (1, 1, -4.0)],
                rows: ny - 2,
                cols: nx - 2,
            },
        }
    }

    /// The moments for maps of this shape with the default scales and `l` angles.
    pub fn for_shape(ny: usize, nx: usize, l: usize) -> Result<WaveletMoments> {
        WaveletMoments::new(ny, nx, default_scales(ny, nx), l)
    }

    /// (ny, nx, J, L).
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        (self.ny, self.nx, self.j, self.l)
    }

    /// Number of moments.
    pub fn len(&self) -> usize {
        4 + self.ring_counts.len()
            + 2 * self.filters.len()
            + self.scale_pairs.len()
            + self.angle_pairs.len()
            + 2 * self.phase_pairs.len()
            + self.increment_len()
    }

    /// Always false: every bank has pixel moments.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A name per moment, in order.
    pub fn labels(&self) -> Vec<String> {
        let lam = |i: usize| format!("j{}t{}", i / self.l, i % self.l);
        let mut out: Vec<String> = ["mean", "m2", "m3", "m4"].iter().map(|s| s.to_string()).collect();
        out.extend((1..=self.ring_counts.len()).map(|r| format!("lnP(k={r})")));
        out.extend((0..self.filters.len()).map(|i| format!("S1 {}", lam(i))));
        out.extend((0..self.filters.len()).map(|i| format!("S2 {}", lam(i))));
        out.extend(self.scale_pairs.iter().map(|&(a, b)| format!("C00 {}-{}", lam(a), lam(b))));
        out.extend(self.angle_pairs.iter().map(|&(a, b)| format!("C00 {}-{}", lam(a), lam(b))));
        for &(a, b) in &self.phase_pairs {
            out.push(format!("C01re {}-{}", lam(a), lam(b)));
            out.push(format!("C01im {}-{}", lam(a), lam(b)));
        }
        if self.increments {
            for op in INCREMENT_OPERATORS {
                out.extend(INCREMENT_ORDERS.iter().map(|order| format!("{order} {op}")));
            }
        }
        out
    }

    /// The family of each moment, an index into [`FAMILIES`].
    pub fn families(&self) -> Vec<usize> {
        let lambdas = self.filters.len();
        let mut out = vec![0; 4];
        out.extend(std::iter::repeat_n(1, self.ring_counts.len()));
        out.extend(std::iter::repeat_n(2, lambdas));
        out.extend(std::iter::repeat_n(3, lambdas));
        out.extend(std::iter::repeat_n(4, self.scale_pairs.len() + self.angle_pairs.len()));
        out.extend(std::iter::repeat_n(5, 2 * self.phase_pairs.len()));
        out.extend(std::iter::repeat_n(6, self.increment_len()));
        out
    }

    /// The rows of the padded grid that hold the map's own pixels.
    fn map_rows(&self) -> std::ops::Range<usize> {
        let first = self.region[0] / self.px;
        first..first + self.ny
    }

    fn check(&self, map: ArrayView2<f64>) -> Result<()> {
        if map.dim() != (self.ny, self.nx) {
            return Err(Error::Invalid(format!(
                "a {}x{} map given to wavelet moments of {}x{} maps",
                map.nrows(),
                map.ncols(),
                self.ny,
                self.nx
            )));
        }
        if map.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("wavelet moments need finite pixels (fill blanks first)".into()));
        }
        Ok(())
    }

    fn forward(&self, map: ArrayView2<f64>) -> Fields {
        let n = self.py * self.px;
        let flat: Vec<f64> = map.iter().copied().collect();
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.scratch_len()];
        let mut space: Vec<Complex<f64>> = self.source.iter().map(|&i| Complex::new(flat[i], 0.0)).collect();
        let mut spectrum = vec![Complex::new(0.0, 0.0); n];
        self.fft.forward(&mut space, &mut spectrum, &mut scratch);
        let mut w = Vec::with_capacity(self.filters.len());
        let mut m = Vec::with_capacity(self.filters.len());
        let mut product = vec![Complex::new(0.0, 0.0); n];
        let mut field = vec![Complex::new(0.0, 0.0); n];
        let inv_n = 1.0 / n as f64;
        for filter in &self.filters {
            for ((p, s), f) in product.iter_mut().zip(&spectrum).zip(filter) {
                *p = s * f;
            }
            self.fft.inverse_rows(&mut product, &mut field, &mut scratch, self.map_rows());
            let on_map: Vec<Complex<f64>> = self.region.iter().map(|&p| field[p] * inv_n).collect();
            m.push(on_map.iter().map(|z| (z.norm_sqr() + MODULUS_EPSILON).sqrt()).collect());
            w.push(on_map);
        }
        Fields { spectrum, w, m, increments: self.increment_fields(map) }
    }

    fn moments_of(&self, map: ArrayView2<f64>, f: &Fields) -> Vec<f64> {
        let n = (self.ny * self.nx) as f64;
        let n_pad = (self.py * self.px) as f64;
        let mean = map.iter().sum::<f64>() / n;
        let central = |k: i32| map.iter().map(|v| (v - mean).powi(k)).sum::<f64>() / n;
        let mut out = vec![mean, central(2), central(3), central(4)];
        let mut power = vec![0.0; self.ring_counts.len()];
        for (z, r) in f.spectrum.iter().zip(&self.ring) {
            if let Some(r) = r {
                power[*r] += z.norm_sqr() / n_pad;
            }
        }
        out.extend(power.iter().zip(&self.ring_counts).map(|(p, c)| (p / c).ln()));
        let s1: Vec<f64> = f.m.iter().map(|m| m.iter().sum::<f64>() / n).collect();
        out.extend(&s1);
        out.extend(f.m.iter().map(|m| m.iter().map(|v| v * v).sum::<f64>() / n));
        for &(a, b) in self.scale_pairs.iter().chain(&self.angle_pairs) {
            let (ma, mb, sa, sb) = (&f.m[a], &f.m[b], s1[a], s1[b]);
            out.push(ma.iter().zip(mb).map(|(x, y)| (x - sa) * (y - sb)).sum::<f64>() / n);
        }
        for &(a, b) in &self.phase_pairs {
            let z: Complex<f64> = f.w[b].iter().zip(&f.m[a]).map(|(w, m)| w * m).sum::<Complex<f64>>() / n;
            out.push(z.re);
            out.push(z.im);
        }
        for d in &f.increments {
            let count = d.len() as f64;
            out.push(d.iter().map(|v| (v * v + MODULUS_EPSILON).sqrt()).sum::<f64>() / count);
            out.push(d.iter().map(|v| v * v).sum::<f64>() / count);
            out.push(d.iter().map(|v| (v * v) * (v * v)).sum::<f64>() / count);
        }
        out
    }

    /// The moments of one map.
    pub fn compute(&self, map: ArrayView2<f64>) -> Result<Vec<f64>> {
        self.check(map)?;
        Ok(self.moments_of(map, &self.forward(map)))
    }

    /// The loss Σ_k w_k (φ_k(map) − t_k)² and its gradient with respect to every pixel.
    pub fn loss_and_gradient(
        &self,
        map: ArrayView2<f64>,
        target: &[f64],
        weights: &[f64],
    ) -> Result<(f64, Array2<f64>)> {
        self.check(map)?;
        if target.len() != self.len() || weights.len() != self.len() {
            return Err(Error::Invalid(format!(
                "{} targets and {} weights given for {} wavelet moments",
                target.len(),
                weights.len(),
                self.len()
            )));
        }
        let n = (self.ny * self.nx) as f64;
        let np = self.py * self.px;
        let n_pad = np as f64;
        let f = self.forward(map);
        let phi = self.moments_of(map, &f);
        let loss: f64 = phi.iter().zip(target).zip(weights).map(|((p, t), w)| w * (p - t).powi(2)).sum();
        // r_k = ∂loss/∂φ_k.
        let r: Vec<f64> = phi.iter().zip(target).zip(weights).map(|((p, t), w)| 2.0 * w * (p - t)).collect();
        let mut at = 0;
        let mut take = |count: usize| {
            let s = &r[at..at + count];
            at += count;
            s
        };
        // Pixel moments, directly on the map.
        let pix = take(4);
        let mean = phi[0];
        let (m2, m3) = (phi[1], phi[2]);
        let per = PerPixel::new(n);
        let mut grad = Array2::<f64>::zeros((self.ny, self.nx));
        for (g, &v) in grad.iter_mut().zip(map.iter()) {
            let d = v - mean;
            *g = per.of(pix[0] + pix[1] * 2.0 * d + pix[2] * 3.0 * (d * d - m2) + pix[3] * 4.0 * (d * d * d - m3));
        }
        // Everything else on the padded grid, through a Fourier accumulator: the power spectrum's
        // gradient with respect to x̂, plus (1/n_pad) Σ_λ ψ̂_λ · FFT(G_λ) from the wavelet moments.
        let rings = take(self.ring_counts.len()).to_vec();
        let mut acc = vec![Complex::new(0.0, 0.0); np];
        let power: Vec<f64> = phi[4..4 + rings.len()].iter().map(|v| v.exp()).collect();
        for ((a, z), ring) in acc.iter_mut().zip(&f.spectrum).zip(&self.ring) {
            if let Some(b) = ring {
                *a += z * (rings[*b] / power[*b] * 2.0 / (self.ring_counts[*b] * n_pad));
            }
        }
        let lambdas = self.filters.len();
        let r_s1 = take(lambdas).to_vec();
        let r_s2 = take(lambdas).to_vec();
        let r_scale = take(self.scale_pairs.len()).to_vec();
        let r_angle = take(self.angle_pairs.len()).to_vec();
        let r_phase = take(2 * self.phase_pairs.len()).to_vec();
        if self.increments {
            let r_inc = take(self.increment_len()).to_vec();
            for (o, (r, d)) in r_inc.chunks(INCREMENT_ORDERS.len()).zip(&f.increments).enumerate() {
                let count = d.len() as f64;
                let c: Vec<f64> = d
                    .iter()
                    .map(|&v| {
                        (r[0] * v / (v * v + MODULUS_EPSILON).sqrt() + r[1] * 2.0 * v + r[2] * 4.0 * v * v * v) / count
                    })
                    .collect();
                self.add_increment_adjoint(o, &c, &mut grad);
            }
        }
        let s1 = &phi[4 + rings.len()..4 + rings.len() + lambdas];
        // ∂loss/∂M_λ (h, real) and the part of G_λ that does not go through the modulus (g), on the
        // map's own pixels, where the moments average.
        let mut h: Vec<Vec<f64>> =
            (0..lambdas).map(|i| f.m[i].iter().map(|&m| per.of(r_s1[i] + r_s2[i] * 2.0 * m)).collect()).collect();
        let mut g: Vec<Vec<Complex<f64>>> = vec![vec![Complex::new(0.0, 0.0); self.region.len()]; lambdas];
        for (k, &(a, b)) in self.scale_pairs.iter().chain(&self.angle_pairs).enumerate() {
            let rk = if k < self.scale_pairs.len() { r_scale[k] } else { r_angle[k - self.scale_pairs.len()] };
            for (x, &y) in h[a].iter_mut().zip(&f.m[b]) {
                *x += per.of(rk * (y - s1[b]));
            }
            for (x, &y) in h[b].iter_mut().zip(&f.m[a]) {
                *x += per.of(rk * (y - s1[a]));
            }
        }
        for (k, &(a, b)) in self.phase_pairs.iter().enumerate() {
            let (ra, rb) = (r_phase[2 * k], r_phase[2 * k + 1]);
            for (x, wb) in h[a].iter_mut().zip(&f.w[b]) {
                *x += per.of(ra * wb.re + rb * wb.im);
            }
            for (x, &ma) in g[b].iter_mut().zip(&f.m[a]) {
                *x += Complex::new(ra, rb) * per.of(ma);
            }
        }
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.scratch_len()];
        let mut fourier = vec![Complex::new(0.0, 0.0); np];
        let mut field = vec![Complex::new(0.0, 0.0); np];
        let rows = self.map_rows();
        for i in 0..lambdas {
            // G_λ is zero off the map's pixels. The FFT transforms the map's rows in place and
            // leaves the others zero, so clear those rows each time.
            field[rows.start * self.px..rows.end * self.px].iter_mut().for_each(|z| *z = Complex::new(0.0, 0.0));
            for (q, &p) in self.region.iter().enumerate() {
                field[p] = g[i][q] + f.w[i][q] * (h[i][q] / f.m[i][q]);
            }
            self.fft.forward_rows(&mut field, &mut fourier, &mut scratch, rows.clone());
            for ((a, z), fl) in acc.iter_mut().zip(&fourier).zip(&self.adjoint_filters[i]) {
                *a += z * fl;
            }
        }
        let mut space = vec![Complex::new(0.0, 0.0); np];
        self.fft.inverse(&mut acc, &mut space, &mut scratch);
        // Each padded pixel is a copy of a map pixel: the copies' gradients add up.
        let flat = grad.as_slice_mut().expect("standard layout");
        for (z, &i) in space.iter().zip(&self.source) {
            flat[i] += z.re;
        }
        Ok((loss, grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn field(seed: u64, n: usize) -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        crate::simulate::gaussian_field(n, 3.0, &mut rng)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for increments in [false, true] {
            gradient_matches_finite_differences_with(increments);
        }
    }

    fn gradient_matches_finite_differences_with(increments: bool) {
        let (ny, nx) = (16, 24);
        let wm = WaveletMoments::new(ny, nx, 2, 4).unwrap().with_increments(increments);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = Array2::from_shape_fn((ny, nx), |_| {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng)
        });
        let phi = wm.compute(x.view()).unwrap();
        let target: Vec<f64> =
            phi.iter().enumerate().map(|(i, p)| p * (1.0 + 0.1 * ((i % 7) as f64 - 3.0) / 3.0) + 0.01).collect();
        let weights: Vec<f64> = (0..phi.len()).map(|i| 1.0 + (i % 3) as f64).collect();
        let (loss, grad) = wm.loss_and_gradient(x.view(), &target, &weights).unwrap();
        assert!(loss > 0.0);
        for &(i, j) in &[(0, 0), (3, 7), (15, 23), (8, 12)] {
            let h = 1e-6;
            let mut xp = x.clone();
            xp[[i, j]] += h;
            let mut xm = x.clone();
            xm[[i, j]] -= h;
            let lp = wm.loss_and_gradient(xp.view(), &target, &weights).unwrap().0;
            let lm = wm.loss_and_gradient(xm.view(), &target, &weights).unwrap().0;
            let fd = (lp - lm) / (2.0 * h);
            assert!((fd - grad[[i, j]]).abs() <= 1e-5 * fd.abs().max(1e-3), "({i},{j}): {fd} vs {}", grad[[i, j]]);
        }
    }

    #[test]
    fn phase_moments_vanish_for_gaussian_fields_and_not_for_filaments() {
        let n = 64;
        let wm = WaveletMoments::for_shape(n, n, 8).unwrap();
        assert_eq!(wm.dims(), (n, n, 4, 8));
        assert_eq!(wm.labels().len(), wm.len());
        let first_c01 = wm.len() - 2 * wm.phase_pairs.len();
        let lambdas = wm.filters.len();
        // |C01| of each pair over √(S2 S2'): a correlation coefficient, averaged over the pairs.
        let c01 = |m: &Array2<f64>| -> f64 {
            let v = wm.compute(m.view()).unwrap();
            let rings = wm.ring_counts.len();
            let s2 = &v[4 + rings + lambdas..4 + rings + 2 * lambdas];
            let pairs = &wm.phase_pairs;
            pairs
                .iter()
                .enumerate()
                .map(|(k, &(a, b))| {
                    let (re, im) = (v[first_c01 + 2 * k], v[first_c01 + 2 * k + 1]);
                    (re * re + im * im).sqrt() / (s2[a] * s2[b]).sqrt()
                })
                .sum::<f64>()
                / pairs.len() as f64
        };
        let gaussian = c01(&field(5, n));
        // Thin bright lines on a dark background.
        let lines = Array2::from_shape_fn((n, n), |(y, x)| {
            let d1 = ((x as f64 - 0.5 * y as f64 - 10.0).rem_euclid(23.0) - 11.5).abs();
            let d2 = ((y as f64 - 0.3 * x as f64).rem_euclid(31.0) - 15.5).abs();
            (-d1 * d1 / 2.0).exp() + (-d2 * d2 / 2.0).exp()
        });
        let filaments = c01(&lines);
        assert!(filaments > 3.0 * gaussian, "C01: filaments {filaments}, Gaussian field {gaussian}");
    }

    #[test]
    fn increments_see_sparse_fine_structure() {
        let n = 64;
        let wm = WaveletMoments::for_shape(n, n, 4).unwrap().with_increments(true);
        let plain = WaveletMoments::for_shape(n, n, 4).unwrap();
        assert_eq!(wm.len(), plain.len() + 9);
        assert_eq!((wm.labels().len(), wm.families().len()), (wm.len(), wm.len()));
        assert_eq!(wm.labels().last().map(String::as_str), Some("d4 laplacian"));
        assert!(wm.families()[plain.len()..].iter().all(|&f| FAMILIES[f] == "increments"));
        // The Laplacian's mean |d| over its root mean square: near √(2/π) ≈ 0.8 for a Gaussian
        // field, far lower for thin lines on a smooth ground (the energy sits on few pixels).
        let sparsity = |m: &Array2<f64>| {
            let v = wm.compute(m.view()).unwrap();
            let k = wm.len() - 3;
            v[k] / v[k + 1].sqrt()
        };
        let gaussian = sparsity(&field(5, n));
        let lines = Array2::from_shape_fn((n, n), |(y, x)| {
            let d = ((x as f64 - 0.5 * y as f64).rem_euclid(23.0) - 11.5).abs();
            (-d * d / 0.5).exp() + 0.01 * (x as f64 / n as f64)
        });
        let thin = sparsity(&lines);
        assert!((gaussian - 0.8).abs() < 0.05, "Gaussian field: {gaussian}");
        assert!(thin < 0.5, "thin lines: {thin}");
    }

    #[test]
    fn refuses_bad_shapes() {
        assert!(WaveletMoments::new(4, 32, 1, 4).is_err());
        assert!(WaveletMoments::new(32, 32, 6, 4).unwrap_err().to_string().contains("at least 64 pixels"));
        let wm = WaveletMoments::new(16, 16, 2, 4).unwrap();
        assert!(wm.compute(Array2::zeros((16, 8)).view()).is_err());
        let mut nan = Array2::zeros((16, 16));
        nan[[1, 1]] = f64::NAN;
        assert!(wm.compute(nan.view()).is_err());
    }
}
