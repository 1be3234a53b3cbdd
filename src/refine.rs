//! Statistics-constrained refinement of synthetic maps: each decoded map is moved by L-BFGS until
//! its wavelet moments ([`WaveletMoments`]: pixel moments, power spectrum, wavelet moduli, their
//! correlations across scales and angles, and the phase moments that carry filaments and compact
//! sources) reach a target set from the real maps. This is the microcanonical gradient descent of
//! the field's few-shot syntheses (wavelet phase harmonics), started from the diffusion model's map
//! instead of white noise: the model supplies a new large-scale layout, the moments the
//! non-Gaussian morphology that a Gaussian prior on latents cannot carry.
//!
//! Targets keep the synthetic maps as varied as the real ones. For moment k with real mean μ_k and
//! standard deviation σ_k, and μ'_k, σ'_k over the synthetic maps before refinement, map i's target
//! is μ_k + (φ_k(x_i) − μ'_k)·σ_k/σ'_k: the synthetic set's moments are moved and rescaled onto the
//! real set's, each map keeping its place within the set (one synthetic map: the real mean). The
//! loss is a weighted mean of ((φ_k − t_k)/σ_k)², so every moment counts in units of the real maps'
//! own scatter, and each family of moments (pixel moments, power spectrum, S1, S2, C00, C01) weighs
//! the same; moments that do not vary over the real maps (scatter below 1e-6 of the largest value
//! of their family: the mean of maps normalized one by one) are left out.
//!
//! Last, each map's one-point PDF is matched to the real maps' exactly by the same rule, quantile
//! by quantile, keeping the order of its pixels (a monotone change of values, which moves the
//! moments little).
//!
//! Everything is in the domain's model space, per map, and deterministic (maps are refined in
//! parallel, each on its own).

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::numerics::lbfgs;
use crate::stats::wavelet_moments::{default_scales, WaveletMoments, FAMILIES};

/// Settings of the refinement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefineOptions {
    /// L-BFGS iterations per map (0: no refinement).
    pub iterations: usize,
    /// Wavelet scales (None: ⌊log2 min(ny, nx)⌋ − 2) and angles over π.
    pub scales: Option<usize>,
    pub angles: usize,
    /// Whether the moments include the pixel-scale increments family.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub increments: bool,
}

impl Default for RefineOptions {
    fn default() -> Self {
        RefineOptions { iterations: DEFAULT_ITERATIONS, scales: None, angles: 8, increments: false }
    }
}

/// L-BFGS iterations per map by default: chosen on the real-field benchmark's development fields
/// (FIDELITY.md, "A lever measured: fewer refinement iterations"): the descent's later
/// iterations meet the moments by adding fine-scale extrema (more peaks, higher scattering χ² on
/// the MHD maps), while the cosmic web's scattering coefficients need about 25 to be met.
pub const DEFAULT_ITERATIONS: usize = 25;

/// What a refinement did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefinementRecord {
    pub options: RefineOptions,
    pub scales: usize,
    /// Moments constrained, and moments left out because the real maps do not vary in them.
    pub moments: usize,
    pub moments_left_out: usize,
    /// The loss (mean squared distance to the target in real-map σ) of each map before and after.
    pub loss_before: Vec<f64>,
    pub loss_after: Vec<f64>,
    /// L-BFGS iterations each map took.
    pub iterations: Vec<usize>,
    /// Wall-clock seconds of the whole refinement (not in the provenance, so outputs are reproducible).
    #[serde(skip)]
    pub seconds: f64,
}

/// A map's values, sorted: its quantile function.
fn sorted_values(m: &Array2<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = m.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The mean and standard deviation over the maps of each quantile (the k-th smallest value), from
/// their sorted values.
fn rank_stats(sorted: &[Vec<f64>]) -> Vec<(f64, f64)> {
    (0..sorted[0].len()).map(|k| mean_std(sorted, k)).collect()
}

/// [`rank_stats`] of maps each dropped once its values are sorted.
fn quantile_stats(maps: Vec<Array2<f64>>) -> Vec<(f64, f64)> {
    rank_stats(&maps.into_iter().map(|m| sorted_values(&m)).collect::<Vec<_>>())
}

/// Matches each map's one-point PDF to the real maps' exactly, keeping its pixels' ranks: the
/// sorted values of map i become μ(q) + (Q_i(q) − μ'(q))·σ(q)/σ'(q) at every quantile q, where μ, σ
/// are the mean and spread of the real maps' quantile functions (`sr`, from [`quantile_stats`]) and
/// μ', σ' the synthetic maps' (sorted again if that is not monotone). The same rule as the moments'
/// targets: the set takes the real set's PDFs, each map keeping its place within it.
fn match_quantiles(maps: &mut [Array2<f64>], sr: &[(f64, f64)]) {
    let qs: Vec<Vec<f64>> = maps.iter().map(sorted_values).collect();
    let n = sr.len();
    let ss = rank_stats(&qs);
    for (map, q) in maps.iter_mut().zip(&qs) {
        let mut target: Vec<f64> = (0..n)
            .map(|k| {
                let ((mr, dr), (ms, ds)) = (sr[k], ss[k]);
                if ds > 0.0 {
                    mr + (q[k] - ms) * dr / ds
                } else {
                    mr
                }
            })
            .collect();
        target.sort_by(f64::total_cmp);
        let mut order: Vec<usize> = (0..n).collect();
        let flat: Vec<f64> = map.iter().copied().collect();
        order.sort_by(|&a, &b| flat[a].total_cmp(&flat[b]).then(a.cmp(&b)));
        let out = map.as_slice_mut().expect("standard layout");
        for (rank, &pixel) in order.iter().enumerate() {
            out[pixel] = target[rank];
        }
    }
}

fn mean_std(rows: &[Vec<f64>], k: usize) -> (f64, f64) {
    let n = rows.len() as f64;
    let mean = rows.iter().map(|r| r[k]).sum::<f64>() / n;
    let std =
        if rows.len() > 1 { (rows.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (mean, std)
}

/// Refines `synthetic` maps (model space) toward the wavelet moments of the `real` maps (model
/// space, the same shape). Returns the refined maps and the record.
pub fn refine(
    synthetic: &[Array2<f64>],
    real: &[Array2<f64>],
    options: &RefineOptions,
) -> Result<(Vec<Array2<f64>>, RefinementRecord)> {
    refine_owned(synthetic.to_vec(), real.to_vec(), options)
}

/// [`refine`] working in the maps given, without copies of them: the same result.
pub fn refine_owned(
    mut synthetic: Vec<Array2<f64>>,
    mut real: Vec<Array2<f64>>,
    options: &RefineOptions,
) -> Result<(Vec<Array2<f64>>, RefinementRecord)> {
    let start = std::time::Instant::now();
    let shape = real.first().map(|m| m.dim()).ok_or_else(|| Error::Invalid("refinement needs real maps".into()))?;
    if real.len() < 2 {
        return Err(Error::Invalid(format!(
            "refinement needs at least 2 real maps to measure the moments' scatter, got {}",
            real.len()
        )));
    }
    if let Some(m) = real.iter().chain(synthetic.iter()).find(|m| m.dim() != shape) {
        return Err(Error::Invalid(format!(
            "refinement needs maps of one shape: {}x{} and {}x{}",
            shape.0,
            shape.1,
            m.nrows(),
            m.ncols()
        )));
    }
    if options.angles == 0 {
        return Err(Error::Invalid("refinement needs at least one angle".into()));
    }
    let scales = options.scales.unwrap_or_else(|| default_scales(shape.0, shape.1));
    let wm = WaveletMoments::new(shape.0, shape.1, scales, options.angles)?.with_increments(options.increments);
    let phi = |maps: &[Array2<f64>], what: &str| -> Result<Vec<Vec<f64>>> {
        maps.par_iter()
            .enumerate()
            .map(|(i, m)| wm.compute(m.view()).map_err(|e| Error::Invalid(format!("{what} map {i}: {e}"))))
            .collect()
    };
    // The loss is in units of the real maps' scatter, so it does not change under an affine map of
    // the values; the optimizer's steps do. Work on the values standardized by the real maps.
    let all = || real.iter().flat_map(|m| m.iter().copied());
    let count = real.iter().map(|m| m.len()).sum::<usize>() as f64;
    let center = all().sum::<f64>() / count;
    let scale = (all().map(|v| (v - center).powi(2)).sum::<f64>() / count).sqrt();
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(Error::Invalid("the real maps are constant (or not finite): nothing to refine toward".into()));
    }
    for m in real.iter_mut().chain(synthetic.iter_mut()) {
        m.mapv_inplace(|v| (v - center) / scale);
    }
    let (pr, ps) = (phi(&real, "real")?, phi(&synthetic, "synthetic")?);
    // What the real maps give beyond their moments: their quantiles. Taken now, so that the maps
    // are not held beside the refined ones.
    let real_quantiles = quantile_stats(real);
    crate::runtime::return_freed_memory();
    let k = wm.len();
    let families = wm.families();
    let mut weights = vec![0.0; k];
    let mut shift = vec![(0.0, 0.0, 0.0, 0.0); k];
    for i in 0..k {
        let (mr, sr) = mean_std(&pr, i);
        let (ms, ss) = if ps.is_empty() { (0.0, 0.0) } else { mean_std(&ps, i) };
        shift[i] = (mr, sr, ms, ss);
    }
    // A moment the real maps hold fixed (up to rounding: its scatter below 1e-6 of the largest
    // value of its family, e.g. the mean of maps normalized one by one) is left out: weighted by
    // 1/σ², rounding noise would decide the loss.
    let mut magnitude = vec![0.0f64; FAMILIES.len()];
    for (&(mr, ..), &f) in shift.iter().zip(&families) {
        if mr.is_finite() {
            magnitude[f] = magnitude[f].max(mr.abs());
        }
    }
    for ((w, &(mr, sr, ..)), &f) in weights.iter_mut().zip(&shift).zip(&families) {
        if sr > 1e-6 * magnitude[f] && sr.is_finite() && mr.is_finite() {
            *w = 1.0 / (sr * sr);
        }
    }
    let used = weights.iter().filter(|w| **w > 0.0).count();
    if used == 0 {
        return Err(Error::Invalid("the real maps do not vary in any wavelet moment: nothing to refine toward".into()));
    }
    // Every family of moments weighs the same, whatever its number of entries (as the battery
    // weighs its statistics): four pixel moments count as much as the many wavelet moments.
    let mut per_family = vec![0usize; FAMILIES.len()];
    for (f, w) in families.iter().zip(&weights) {
        if *w > 0.0 {
            per_family[*f] += 1;
        }
    }
    let present = per_family.iter().filter(|c| **c > 0).count() as f64;
    for (w, f) in weights.iter_mut().zip(&families) {
        if *w > 0.0 {
            *w /= present * per_family[*f] as f64;
        }
    }
    let target_of = |p: &[f64]| -> Vec<f64> {
        p.iter()
            .zip(&shift)
            .map(|(v, &(mr, sr, ms, ss))| if ss > 0.0 && ss.is_finite() { mr + (v - ms) * sr / ss } else { mr })
            .collect()
    };
    let loss_of =
        |p: &[f64], t: &[f64]| -> f64 { p.iter().zip(t).zip(&weights).map(|((a, b), w)| w * (a - b).powi(2)).sum() };
    let results: Vec<(Array2<f64>, f64, f64, usize)> = synthetic
        .par_iter()
        .zip(&ps)
        .map(|(map, p)| -> Result<(Array2<f64>, f64, f64, usize)> {
            let target = target_of(p);
            let before = loss_of(p, &target);
            let mut failure = None;
            let m = lbfgs(map.iter().copied().collect(), options.iterations, 10, |x| {
                let view = ndarray::ArrayView2::from_shape(shape, x).expect("map shape");
                match wm.loss_and_gradient(view, &target, &weights) {
                    Ok((l, g)) => (l, g.into_iter().collect()),
                    Err(e) => {
                        failure = Some(e);
                        (f64::NAN, vec![0.0; x.len()])
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            let out = Array2::from_shape_vec(shape, m.x).expect("map shape");
            Ok((out, before, m.value, m.iterations))
        })
        .collect::<Result<_>>()?;
    drop(synthetic);
    crate::runtime::return_freed_memory();
    let mut maps = Vec::with_capacity(results.len());
    let mut steps = Vec::with_capacity(results.len());
    for (m, before, after, it) in results {
        maps.push(m);
        steps.push((before, after, it));
    }
    match_quantiles(&mut maps, &real_quantiles);
    for m in maps.iter_mut() {
        m.mapv_inplace(|v| center + scale * v);
    }
    let mut record = RefinementRecord {
        options: *options,
        scales,
        moments: used,
        moments_left_out: k - used,
        loss_before: Vec::new(),
        loss_after: Vec::new(),
        iterations: Vec::new(),
        seconds: 0.0,
    };
    for (before, after, it) in steps {
        record.loss_before.push(before);
        record.loss_after.push(after);
        record.iterations.push(it);
    }
    record.seconds = start.elapsed().as_secs_f64();
    Ok((maps, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn refinement_brings_gaussian_fields_to_the_moments_of_skewed_ones() {
        let n = 32;
        let field = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            crate::simulate::gaussian_field(n, 3.0, &mut rng)
        };
        // Real: exp of a Gaussian field (skewed, compact bright peaks); synthetic: Gaussian fields.
        let real: Vec<Array2<f64>> = (0..12).map(|i| field(i).mapv(|v| (0.6 * v).exp())).collect();
        let synthetic: Vec<Array2<f64>> = (100..104).map(|i| field(i).mapv(|v| 0.6 * v + 1.0)).collect();
        let options = RefineOptions { iterations: 60, ..RefineOptions::default() };
        let (maps, record) = refine(&synthetic, &real, &options).unwrap();
        assert_eq!((maps.len(), record.scales, record.iterations.len()), (4, 3, 4));
        for (b, a) in record.loss_before.iter().zip(&record.loss_after) {
            assert!(a < &(0.1 * b), "loss {b} -> {a}");
        }
        let skew = |m: &Array2<f64>| {
            let n = m.len() as f64;
            let mean = m.sum() / n;
            let var = m.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            m.iter().map(|v| (v - mean).powi(3)).sum::<f64>() / n / var.powf(1.5)
        };
        let mean = |maps: &[Array2<f64>]| maps.iter().map(skew).sum::<f64>() / maps.len() as f64;
        let (real_skew, before, after) = (mean(&real), mean(&synthetic), mean(&maps));
        // Each map keeps its own place in the set; the set as a whole takes the real skewness.
        assert!(before.abs() < 0.2 * real_skew, "skewness before: {before} (real {real_skew})");
        assert!((after - real_skew).abs() < 0.3 * real_skew, "skewness after: {after} (real {real_skew})");
        // Deterministic, whatever the threads.
        assert_eq!(refine(&synthetic, &real, &options).unwrap().0, maps);
    }

    #[test]
    fn moments_the_real_maps_hold_fixed_are_left_out() {
        // Maps normalized one by one to mean 1 (their mean moment varies by rounding only): the
        // rounding noise must not weigh 1/σ² in the loss.
        let field = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let m = crate::simulate::gaussian_field(32, 3.0, &mut rng).mapv(|v| (0.5 * v).exp());
            let mean = m.mean().unwrap();
            m.mapv(|v| (v / mean) as f32 as f64)
        };
        let real: Vec<Array2<f64>> = (0..12).map(field).collect();
        let synthetic: Vec<Array2<f64>> = (100..104).map(field).collect();
        let options = RefineOptions { iterations: 30, ..RefineOptions::default() };
        let (_, record) = refine(&synthetic, &real, &options).unwrap();
        assert!(record.moments_left_out >= 1, "{record:?}");
        for (b, a) in record.loss_before.iter().zip(&record.loss_after) {
            assert!(*b < 100.0 && a < b, "loss {b} -> {a}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let m = Array2::from_shape_fn((16, 16), |(y, x)| ((x * 7 + y * 3) % 5) as f64);
        let opts = RefineOptions::default();
        let one = std::slice::from_ref(&m);
        assert!(refine(one, one, &opts).unwrap_err().to_string().contains("at least 2 real maps"));
        let e = refine(&[Array2::zeros((16, 8))], &[m.clone(), m.clone()], &opts).unwrap_err().to_string();
        assert!(e.contains("one shape"), "{e}");
        let e = refine(one, &[m.clone(), m.clone()], &opts).unwrap_err().to_string();
        assert!(e.contains("do not vary"), "{e}");
    }
}
