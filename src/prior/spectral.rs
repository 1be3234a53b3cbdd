//! Latents in the Fourier basis: per-mode cross-spectra between channels, rings of equal |k|,
//! and stationary Gaussian fields drawn from a cross-spectrum.
//!
//! A latent (C, H, W) is transformed per channel with the unitary 2-D DFT (divided by √(HW)),
//! so that a white field of unit variance has unit power in every mode and the squared norm of a
//! latent is the sum of its mode powers. A stationary field has independent modes: its
//! covariance is one Hermitian C × C matrix S(k) per mode k (the cross-spectrum).

use ndarray::{Array2, Array3, Array4, ArrayView1};
use rand::Rng;
use rand_distr::StandardNormal;
use rustfft::num_complex::Complex;
use serde::Serialize;

use crate::stats::power_spectrum::fft2;

type C64 = Complex<f64>;

/// Unitary 2-D DFT of every channel of a flattened (C·H·W) latent: `out[c][y·W + x]`.
pub fn modes(x: ArrayView1<f64>, shape: [usize; 3]) -> Vec<Vec<C64>> {
    let [c, h, w] = shape;
    let norm = 1.0 / ((h * w) as f64).sqrt();
    (0..c)
        .map(|ch| {
            let mut buf: Vec<C64> = (0..h * w).map(|i| C64::new(x[ch * h * w + i] * norm, 0.0)).collect();
            fft2(&mut buf, h, w, false);
            buf
        })
        .collect()
}

/// Inverse of [`modes`]: the real part of the unitary inverse DFT, flattened (C·H·W).
pub fn field(modes: &[Vec<C64>], shape: [usize; 3]) -> Vec<f64> {
    let [_, h, w] = shape;
    let norm = 1.0 / ((h * w) as f64).sqrt();
    let mut out = Vec::with_capacity(shape.iter().product());
    for m in modes {
        let mut buf = m.clone();
        fft2(&mut buf, h, w, true);
        out.extend(buf.iter().map(|v| v.re * norm));
    }
    out
}

/// Ring of every mode: 0 for k = 0, else the nearest integer of |k| in units of the
/// fundamental frequency of the longer side (at least 1).
pub fn rings(h: usize, w: usize) -> (Vec<usize>, usize) {
    let side = h.max(w) as f64;
    let freq = |i: usize, n: usize| crate::stats::power_spectrum::fftfreq(i, n);
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        for x in 0..w {
            let r = ((freq(y, h) * side).powi(2) + (freq(x, w) * side).powi(2)).sqrt();
            out.push(if y == 0 && x == 0 { 0 } else { (r.round() as usize).max(1) });
        }
    }
    let count = out.iter().max().map_or(1, |m| m + 1);
    (out, count)
}

/// The mean of a per-mode quantity (row-major, H·W) over each ring.
pub fn ring_means(values: &[f64], h: usize, w: usize) -> Vec<f64> {
    let (ring, count) = rings(h, w);
    let (mut sum, mut members) = (vec![0.0; count], vec![0usize; count]);
    for (&r, v) in ring.iter().zip(values) {
        sum[r] += v;
        members[r] += 1;
    }
    sum.iter().zip(&members).map(|(s, &m)| s / m.max(1) as f64).collect()
}

/// Per-mode cross-spectra of a set of latents about a mean: S(k)_ab = Σ_n R_na(k) R̄_nb(k) / (N−1).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossSpectra {
    pub shape: [usize; 3],
    /// Real and imaginary parts, (H, W, C, C).
    pub re: Array4<f64>,
    pub im: Array4<f64>,
}

impl CrossSpectra {
    /// Cross-spectra of the rows of `z` (N × C·H·W, float32 latents) about `mean`.
    pub fn estimate(z: &Array2<f32>, mean: ArrayView1<f64>, shape: [usize; 3]) -> CrossSpectra {
        let [c, h, w] = shape;
        let n = z.nrows();
        let mut re = Array4::<f64>::zeros((h, w, c, c));
        let mut im = Array4::<f64>::zeros((h, w, c, c));
        for row in z.rows() {
            let r = row.mapv(f64::from) - mean;
            let m = modes(r.view(), shape);
            for k in 0..h * w {
                let (y, x) = (k / w, k % w);
                for a in 0..c {
                    for b in 0..c {
                        let v = m[a][k] * m[b][k].conj();
                        re[[y, x, a, b]] += v.re;
                        im[[y, x, a, b]] += v.im;
                    }
                }
            }
        }
        let dof = (n.max(2) - 1) as f64;
        CrossSpectra { shape, re: re / dof, im: im / dof }
    }

    fn at(&self, y: usize, x: usize, a: usize, b: usize) -> C64 {
        C64::new(self.re[[y, x, a, b]], self.im[[y, x, a, b]])
    }

    /// trace S(k) for every mode, row-major (H·W).
    pub fn traces(&self) -> Vec<f64> {
        let [c, h, w] = self.shape;
        (0..h * w).map(|k| (0..c).map(|a| self.re[[k / w, k % w, a, a]]).sum()).collect()
    }

    /// Mean variance per dimension: Σ_k trace S(k) / d.
    pub fn mean_variance(&self) -> f64 {
        self.traces().iter().sum::<f64>() / self.shape.iter().product::<usize>() as f64
    }

    /// Variance of each channel at every pixel (a stationary field's is the same everywhere).
    pub fn channel_variances(&self) -> Vec<f64> {
        let [c, h, w] = self.shape;
        (0..c).map(|a| self.re.slice(ndarray::s![.., .., a, a]).sum() / (h * w) as f64).collect()
    }

    /// The average of S over each ring, as a cross-spectrum of the same shape (real symmetric,
    /// since a ring holds k and −k together).
    pub fn ring_average(&self) -> CrossSpectra {
        let [c, h, w] = self.shape;
        let (ring, count) = rings(h, w);
        let mut sum_re = Array3::<f64>::zeros((count, c, c));
        let mut sum_im = Array3::<f64>::zeros((count, c, c));
        let mut members = vec![0usize; count];
        for (k, &r) in ring.iter().enumerate() {
            members[r] += 1;
            for a in 0..c {
                for b in 0..c {
                    sum_re[[r, a, b]] += self.re[[k / w, k % w, a, b]];
                    sum_im[[r, a, b]] += self.im[[k / w, k % w, a, b]];
                }
            }
        }
        let mut out =
            CrossSpectra { shape: self.shape, re: Array4::zeros((h, w, c, c)), im: Array4::zeros((h, w, c, c)) };
        for (k, &r) in ring.iter().enumerate() {
            for a in 0..c {
                for b in 0..c {
                    out.re[[k / w, k % w, a, b]] = sum_re[[r, a, b]] / members[r] as f64;
                    out.im[[k / w, k % w, a, b]] = sum_im[[r, a, b]] / members[r] as f64;
                }
            }
        }
        out
    }

    /// (1 − λ)·self + λ·other.
    pub fn blend(&self, other: &CrossSpectra, lambda: f64) -> CrossSpectra {
        CrossSpectra {
            shape: self.shape,
            re: &self.re * (1.0 - lambda) + &other.re * lambda,
            im: &self.im * (1.0 - lambda) + &other.im * lambda,
        }
    }

    /// Empirical-Bayes weight of the ring average against the per-mode estimates from `dof`
    /// degrees of freedom: the share of the spread of the per-mode matrices about their ring's
    /// average that sampling noise alone explains (a complex Wishart entry S_ab has variance
    /// S_aa·S_bb / dof).
    pub fn ring_shrinkage(&self, ring_avg: &CrossSpectra, dof: usize) -> f64 {
        let (d_re, d_im) = (&self.re - &ring_avg.re, &self.im - &ring_avg.im);
        let spread = d_re.mapv(|v| v * v).sum() + d_im.mapv(|v| v * v).sum();
        let noise: f64 = ring_avg.traces().iter().map(|t| t * t).sum::<f64>() / dof.max(1) as f64;
        if spread > 0.0 {
            (noise / spread).min(1.0)
        } else {
            1.0
        }
    }

    /// Lower Cholesky factor of every mode's matrix, with a relative jitter that keeps
    /// rank-deficient modes (e.g. fewer latents than channels) drawable.
    fn factors(&self) -> Vec<Vec<C64>> {
        let [c, h, w] = self.shape;
        (0..h * w)
            .map(|k| {
                let (y, x) = (k / w, k % w);
                let tr: f64 = (0..c).map(|a| self.re[[y, x, a, a]]).sum::<f64>().max(0.0);
                let jitter = 1e-10 * tr / c as f64 + f64::MIN_POSITIVE;
                let mut l = vec![C64::new(0.0, 0.0); c * c];
                for i in 0..c {
                    for j in 0..=i {
                        let mut s = self.at(y, x, i, j);
                        for p in 0..j {
                            s -= l[i * c + p] * l[j * c + p].conj();
                        }
                        if i == j {
                            l[i * c + i] = C64::new((s.re + jitter).max(0.0).sqrt(), 0.0);
                        } else {
                            let d = l[j * c + j].re;
                            l[i * c + j] = if d > 0.0 { s / d } else { C64::new(0.0, 0.0) };
                        }
                    }
                }
                l
            })
            .collect()
    }

    /// One zero-mean stationary Gaussian field with this cross-spectrum, flattened (C·H·W):
    /// white noise, transformed, each mode's channel vector multiplied by the Cholesky factor of
    /// its S(k), transformed back. A real white field's modes satisfy W(−k) = W̄(k), and so do
    /// the factors (S(−k) = S̄(k)), so the result is real.
    pub fn draw<R: Rng>(&self, rng: &mut R) -> Vec<f64> {
        let [c, h, w] = self.shape;
        let factors = self.factors();
        let white: Vec<f64> = (0..c * h * w).map(|_| rng.sample(StandardNormal)).collect();
        let wm = modes(ArrayView1::from(&white), self.shape);
        let mut out = vec![vec![C64::new(0.0, 0.0); h * w]; c];
        for (k, l) in factors.iter().enumerate() {
            for i in 0..c {
                out[i][k] = (0..=i).map(|j| l[i * c + j] * wm[j][k]).sum();
            }
        }
        field(&out, self.shape)
    }
}

/// Per-ring James–Stein shrinkage of a mean estimated from N latents: in each ring the mean's
/// modes are scaled by max(0, 1 − noise/power), where power is the ring's Σ‖M(k)‖² and noise
/// Σ trace S(k)/N is what the sampling error of a mean of N latents alone would put there. The
/// paper's few-shot correction is the same rule with one ring holding every mode, which also
/// shrinks the mean's k = 0 level (the domain's overall brightness in every decoded map).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RingShrinkage {
    /// Factor of each ring (ring 0 is k = 0).
    pub factors: Vec<f64>,
}

impl RingShrinkage {
    pub fn fit(mean: ArrayView1<f64>, spectra: &CrossSpectra, n: usize) -> RingShrinkage {
        let [_, h, w] = spectra.shape;
        let (ring, count) = rings(h, w);
        let m = modes(mean, spectra.shape);
        let traces = spectra.traces();
        let (mut power, mut noise) = (vec![0.0; count], vec![0.0; count]);
        for (k, &r) in ring.iter().enumerate() {
            power[r] += m.iter().map(|ch| ch[k].norm_sqr()).sum::<f64>();
            noise[r] += traces[k] / n as f64;
        }
        let factors =
            power.iter().zip(&noise).map(|(&p, &q)| if p > 0.0 { (1.0 - q / p).max(0.0) } else { 0.0 }).collect();
        RingShrinkage { factors }
    }

    /// The mean with every ring scaled by its factor.
    pub fn apply(&self, mean: ArrayView1<f64>, shape: [usize; 3]) -> Vec<f64> {
        let (ring, _) = rings(shape[1], shape[2]);
        let mut m = modes(mean, shape);
        for ch in &mut m {
            for (k, v) in ch.iter_mut().enumerate() {
                *v *= self.factors[ring[k]];
            }
        }
        field(&m, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_unitary_transform_round_trips_and_keeps_the_norm() {
        let shape = [2, 4, 6];
        let x = Array1::from_iter((0..48).map(|i| ((i * 7) % 11) as f64 - 5.0));
        let m = modes(x.view(), shape);
        let power: f64 = m.iter().flat_map(|c| c.iter().map(|v| v.norm_sqr())).sum();
        assert!((power - x.dot(&x)).abs() < 1e-9);
        let back = field(&m, shape);
        assert!(back.iter().zip(x.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
        let (r, count) = rings(4, 6);
        assert_eq!(r[0], 0);
        assert!(r[1..].iter().all(|&v| v >= 1));
        assert_eq!(count, r.iter().max().unwrap() + 1);
    }

    #[test]
    fn draws_have_the_cross_spectrum_they_were_drawn_from() {
        // Channel 1 = 0.6·channel 0 + noise, with a red spectrum and a suppressed k = 0 mode.
        let shape = [2, 8, 8];
        let (h, w) = (8, 8);
        let (ring, _) = rings(h, w);
        let mut s = CrossSpectra { shape, re: Array4::zeros((h, w, 2, 2)), im: Array4::zeros((h, w, 2, 2)) };
        for k in 0..h * w {
            let p = if k == 0 { 0.02 } else { 2.0 / ring[k] as f64 };
            let (y, x) = (k / w, k % w);
            s.re[[y, x, 0, 0]] = p;
            s.re[[y, x, 0, 1]] = 0.6 * p;
            s.re[[y, x, 1, 0]] = 0.6 * p;
            s.re[[y, x, 1, 1]] = 0.36 * p + 0.5;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 3000;
        let mut z = Array2::<f64>::zeros((n, 128));
        for i in 0..n {
            z.row_mut(i).assign(&Array1::from(s.draw(&mut rng)));
        }
        let est = CrossSpectra::estimate(&crate::prior::tests::f32s(&z), Array1::zeros(128).view(), shape);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        for k in [0usize, 1, 9, 27] {
            let (y, x) = (k / w, k % w);
            for (a, b) in [(0, 0), (0, 1), (1, 1)] {
                // The estimate from n draws has relative error ~ √(2/n) per entry.
                assert!(
                    rel(est.re[[y, x, a, b]], s.re[[y, x, a, b]]) < 0.12,
                    "mode {k} ({a},{b}): {} vs {}",
                    est.re[[y, x, a, b]],
                    s.re[[y, x, a, b]]
                );
            }
        }
        // k = 0 of every draw (the channel means) keeps its 50× suppression.
        let k0: Vec<f64> = (0..n).map(|i| z.row(i).slice(ndarray::s![..64]).sum() / 8.0).collect();
        let var = k0.iter().map(|v| v * v).sum::<f64>() / n as f64;
        assert!((var - 0.02).abs() < 0.003, "k = 0 power {var}");
    }

    #[test]
    fn ring_shrinkage_keeps_a_strong_level_and_removes_noise() {
        let shape = [1, 8, 8];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 16;
        // Latents: a common level 0.5 per pixel (k = 0 power 16) plus unit white noise.
        let z = Array2::from_shape_fn((n, 64), |_| 0.5 + rng.sample::<f64, _>(StandardNormal));
        let mean = z.mean_axis(ndarray::Axis(0)).unwrap();
        let s = CrossSpectra::estimate(&crate::prior::tests::f32s(&z), mean.view(), shape);
        let js = RingShrinkage::fit(mean.view(), &s, n);
        assert!(js.factors[0] > 0.95, "k = 0 factor {}", js.factors[0]);
        let rest: f64 = js.factors[1..].iter().sum::<f64>() / (js.factors.len() - 1) as f64;
        assert!(rest < 0.3, "noise rings keep {rest}");
        let m = js.apply(mean.view(), shape);
        let level = m.iter().sum::<f64>() / 64.0;
        assert!((level - mean.mean().unwrap()).abs() < 0.02 * js.factors[0].max(0.01) + 1e-9);
    }

    #[test]
    fn ring_shrinkage_weight_tracks_real_anisotropy() {
        let shape = [1, 8, 8];
        let (h, w) = (8, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 40;
        // Isotropic white latents: the per-mode spread is noise; weight near 1.
        let z = Array2::from_shape_fn((n, 64), |_| rng.sample::<f64, _>(StandardNormal));
        let s = CrossSpectra::estimate(&crate::prior::tests::f32s(&z), Array1::zeros(64).view(), shape);
        assert!(s.ring_shrinkage(&s.ring_average(), n - 1) > 0.8);
        // Strongly anisotropic: power only along x; the weight drops.
        let mut aniso = s.clone();
        for y in 0..h {
            for x in 0..w {
                aniso.re[[y, x, 0, 0]] = if y == 0 { 20.0 } else { 0.05 };
            }
        }
        assert!(aniso.ring_shrinkage(&aniso.ring_average(), n - 1) < 0.1);
    }
}
