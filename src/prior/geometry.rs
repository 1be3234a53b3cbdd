//! Geometric sampling: candidates from the prior (or slerped between a real latent and a
//! draw), kept only when they sit among K random real latents the way a real latent does.
//!
//! Three statistics of a point x against K real latents z₁…z_K:
//! * distance: mean ‖x − z_r‖;
//! * origin angle: mean angle between x and z_r (degrees);
//! * pair angle: mean angle at x between z_r and z_{r+1} (degrees).
//!
//! Targets come from the domain itself: each real latent in turn is the candidate against K
//! others (leave-one-out), and the central quantile band of those values is accepted.
//!
//! A fourth, optional test compares the candidate's own norm with the central band of the real
//! latents' norms: inverted latents all have nearly the same length (far less spread than a
//! Gaussian of their covariance would give), and the decoded contrast grows with it. With
//! [`NormMode::Match`] every candidate's deviation from the centre is rescaled so that its norm
//! is a draw from N(mean, sd²) of the real norms.
//!
//! Few-shot bias: with N latents the fitted mean μ̂ carries the sampling noise of its own
//! members, so ‖μ̂‖² exceeds ‖μ‖² by about d·σ²/N and a draw from N(μ̂, σ²) lies closer to the
//! real latents than they lie to each other. [`Debias::Global`] draws from
//! N(s·μ̂, (1 + 1/N)·Σ) with s = 1 − d·σ²/(N·‖μ̂‖²): then the expected dot product of a draw with
//! a real latent is ‖μ‖², and its expected squared distance to one is 2·d·σ², as for two real
//! latents. That one factor also scales the mean's k = 0 mode (each channel's level, which the
//! decoder turns into the overall brightness of every map) although its own noise is tiny;
//! [`Debias::Rings`] applies the same James–Stein rule per ring of equal |k| instead
//! ([`super::spectral::RingShrinkage`]), keeping the well-measured level and shrinking the modes
//! that are mostly noise.

use ndarray::{Array1, Array2, ArrayView1, Axis};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{row_f64, GaussianPrior};
use crate::error::{Error, Result};

/// Spherical interpolation of directions with linear interpolation of norms; falls back to
/// linear interpolation when the angle is tiny or the vectors are (nearly) opposite or zero.
pub fn slerp(a: ArrayView1<f64>, b: ArrayView1<f64>, t: f64) -> Array1<f64> {
    let (na, nb) = (a.dot(&a).sqrt(), b.dot(&b).sqrt());
    let lerp = || &a * (1.0 - t) + &b * t;
    if na == 0.0 || nb == 0.0 {
        return lerp();
    }
    let cos = (a.dot(&b) / (na * nb)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    if omega < 1e-6 || std::f64::consts::PI - omega < 1e-6 {
        return lerp();
    }
    let so = omega.sin();
    let dir = &a * (((1.0 - t) * omega).sin() / (so * na)) + &b * ((t * omega).sin() / (so * nb));
    dir * ((1.0 - t) * na + t * nb)
}

/// The statistics of a point against reference latents, and its own norm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub distance: f64,
    pub origin_angle: f64,
    pub pair_angle: f64,
    pub norm: f64,
}

/// Statistics of `x` against the rows `refs` of `z` (at least two).
pub fn geometry_of(x: ArrayView1<f64>, z: &Array2<f32>, refs: &[usize]) -> Geometry {
    let k = refs.len() as f64;
    let rows: Vec<Array1<f64>> = refs.iter().map(|&r| row_f64(z, r)).collect();
    let diffs: Vec<Array1<f64>> = rows.iter().map(|row| row - &x).collect();
    let distance = diffs.iter().map(|d| d.dot(d).sqrt()).sum::<f64>() / k;
    let origin_angle = rows.iter().map(|row| crate::numerics::angle_deg(x, row.view())).sum::<f64>() / k;
    let pairs = diffs.windows(2).map(|w| crate::numerics::angle_deg(w[0].view(), w[1].view())).sum::<f64>() / (k - 1.0);
    Geometry { distance, origin_angle, pair_angle: pairs, norm: x.dot(&x).sqrt() }
}

/// Which tests are on, K and the accepted quantile band (percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestSpec {
    pub k: usize,
    pub band: (f64, f64),
    pub distance: bool,
    pub origin_angle: bool,
    pub pair_angle: bool,
    #[serde(default)]
    pub norm: bool,
}

/// The names of the tests, in the order of [`Targets::check`].
pub const TEST_NAMES: [&str; 4] = ["distance", "origin", "pair", "norm"];

/// Synthetic maps made by default (`sample --count`, `sampling.count`).
pub const DEFAULT_COUNT: usize = 16;
/// Real latents per test by default (`--k`, `sampling.k`).
pub const DEFAULT_K: usize = 10;
/// The accepted central band of the leave-one-out statistics by default, percent.
pub const DEFAULT_BAND: [f64; 2] = [5.0, 95.0];
/// Candidates examined at most by default (`--budget`, `sampling.budget`).
pub const DEFAULT_BUDGET: usize = 10000;

impl TestSpec {
    /// Which tests are on, in the order of [`TEST_NAMES`].
    pub fn enabled(&self) -> [bool; 4] {
        [self.distance, self.origin_angle, self.pair_angle, self.norm]
    }

    /// K, the band (percent) and the tests named (any of `distance`, `origin`, `pair`, `norm`).
    pub fn parse(k: usize, band: (f64, f64), tests: &[String]) -> Result<TestSpec> {
        let mut spec = TestSpec { k, band, distance: false, origin_angle: false, pair_angle: false, norm: false };
        for t in tests {
            match t.as_str() {
                "distance" => spec.distance = true,
                "origin" => spec.origin_angle = true,
                "pair" => spec.pair_angle = true,
                "norm" => spec.norm = true,
                o => return Err(Error::Invalid(format!("unknown test '{o}' (distance, origin, pair, norm)"))),
            }
        }
        Ok(spec)
    }
}

/// The run's defaults: [`DEFAULT_K`] real latents, the [`DEFAULT_BAND`], all four tests of
/// [`TEST_NAMES`] (as `sampling.tests` defaults to).
impl Default for TestSpec {
    fn default() -> Self {
        TestSpec {
            k: DEFAULT_K,
            band: (DEFAULT_BAND[0], DEFAULT_BAND[1]),
            distance: true,
            origin_angle: true,
            pair_angle: true,
            norm: true,
        }
    }
}

/// Accepted interval of each statistic, with the leave-one-out values they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    pub spec: TestSpec,
    pub distance: (f64, f64),
    pub origin_angle: (f64, f64),
    pub pair_angle: (f64, f64),
    pub norm: (f64, f64),
    /// Mean and standard deviation of the real latents' norms.
    pub norm_mean: f64,
    pub norm_std: f64,
    /// Leave-one-out statistics of every real latent.
    pub real: Vec<Geometry>,
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    crate::numerics::percentile_sorted(values, q)
}

impl Targets {
    /// Leave-one-out targets from the real latents `z` (rows).
    pub fn from_latents(z: &Array2<f32>, spec: TestSpec, rng: &mut ChaCha8Rng) -> Result<Targets> {
        let n = z.nrows();
        if spec.k < 2 || spec.k > n - 1 {
            return Err(Error::Invalid(format!(
                "K = {} real latents per test needs 2 <= K <= N − 1 = {}",
                spec.k,
                n - 1
            )));
        }
        let (lo, hi) = spec.band;
        check_band(lo, hi)?;
        let real: Vec<Geometry> = (0..n)
            .map(|i| {
                let refs: Vec<usize> =
                    sample(rng, n - 1, spec.k).into_iter().map(|r| if r >= i { r + 1 } else { r }).collect();
                geometry_of(row_f64(z, i).view(), z, &refs)
            })
            .collect();
        let band = |f: fn(&Geometry) -> f64| {
            let mut v: Vec<f64> = real.iter().map(f).collect();
            (quantile(&mut v, lo), quantile(&mut v, hi))
        };
        let norms: Vec<f64> = real.iter().map(|g| g.norm).collect();
        let (norm_mean, norm_std) = (crate::numerics::mean(&norms), crate::numerics::sample_std(&norms));
        Ok(Targets {
            spec,
            distance: band(|g| g.distance),
            origin_angle: band(|g| g.origin_angle),
            pair_angle: band(|g| g.pair_angle),
            norm: band(|g| g.norm),
            norm_mean,
            norm_std,
            real,
        })
    }

    /// Which enabled tests a point passes, in the order of [`TEST_NAMES`]; disabled tests pass.
    pub fn check(&self, g: &Geometry) -> [bool; 4] {
        let inside = |v: f64, (a, b): (f64, f64)| v >= a && v <= b;
        let pass = [
            inside(g.distance, self.distance),
            inside(g.origin_angle, self.origin_angle),
            inside(g.pair_angle, self.pair_angle),
            inside(g.norm, self.norm),
        ];
        let on = self.spec.enabled();
        [0, 1, 2, 3].map(|i| !on[i] || pass[i])
    }
}

/// How candidates are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateKind {
    /// Draws from the prior.
    Draw,
    /// Slerp between a random real latent and a draw, at t = k/21 for a random k in 1…20.
    Slerp,
}

crate::keyword_enum!(CandidateKind, "candidate kind", { Draw => "draw" | "prior", Slerp => "slerp" });

/// The few-shot correction of the draw distribution (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Debias {
    /// Draws around μ̂ with the fitted spread.
    None,
    /// One James–Stein factor for the whole mean, and (1 + 1/N)·Σ.
    Global,
    /// One James–Stein factor per ring of equal |k|, and (1 + 1/N)·Σ.
    Rings,
}

impl Debias {
    pub const DEFAULT: Debias = Debias::Rings;
}

crate::keyword_enum!(Debias, "few-shot correction", { None => "none", Global => "global", Rings => "rings" });

/// How a candidate's length is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormMode {
    /// As drawn.
    Free,
    /// Its deviation from the centre rescaled so that its norm is a draw from N(m, s²), m and s
    /// the mean and standard deviation of the real latents' norms.
    Match,
}

impl NormMode {
    pub const DEFAULT: NormMode = NormMode::Match;
}

crate::keyword_enum!(NormMode, "norm mode", { Free => "free", Match => "match" });

/// Everything that decides which latents `sample` returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub count: usize,
    pub candidates: CandidateKind,
    pub tests: TestSpec,
    /// Most candidates examined before giving up.
    pub budget: usize,
    pub seed: u64,
    pub debias: Debias,
    pub norm: NormMode,
}

/// Accepted latents and the bookkeeping that goes into the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingOutcome {
    /// The accepted latents (count × d), float32 as they are written (drawn and tested in float64).
    #[serde(skip)]
    pub accepted: Array2<f32>,
    pub tried: usize,
    /// Candidates that passed each test (in the order of [`TEST_NAMES`]) and all of them.
    pub passed: [usize; 4],
    pub passed_all: usize,
    pub targets: Targets,
    /// ‖centre of the draws‖ / ‖μ̂‖ (1 without debiasing).
    pub mean_scale: f64,
    /// Factor applied to the prior's standard deviations for draws.
    pub spread_scale: f64,
    /// The per-ring factors of [`Debias::Rings`].
    pub ring_factors: Option<Vec<f64>>,
}

impl SamplingOutcome {
    /// Acceptance rate of each test and of all together.
    pub fn rates(&self) -> ([f64; 4], f64) {
        let t = self.tried.max(1) as f64;
        (self.passed.map(|p| p as f64 / t), self.passed_all as f64 / t)
    }

    /// "distance 47.2 %, origin 94.5 %, …" for the enabled tests.
    pub fn rates_text(&self) -> String {
        let (rates, _) = self.rates();
        let on = self.targets.spec.enabled();
        let parts: Vec<String> = TEST_NAMES
            .iter()
            .zip(rates)
            .zip(on)
            .filter(|(_, o)| *o)
            .map(|((n, r), _)| format!("{n} {:.1} %", 100.0 * r))
            .collect();
        if parts.is_empty() {
            "no tests".into()
        } else {
            parts.join(", ")
        }
    }

    /// Acceptance per enabled test, as a JSON object keyed by [`TEST_NAMES`].
    pub fn rates_json(&self) -> serde_json::Value {
        let (rates, _) = self.rates();
        let on = self.targets.spec.enabled();
        let map: serde_json::Map<String, serde_json::Value> = TEST_NAMES
            .iter()
            .zip(rates)
            .zip(on)
            .filter(|(_, o)| *o)
            .map(|((n, r), _)| (n.to_string(), serde_json::json!(r)))
            .collect();
        serde_json::Value::Object(map)
    }

    /// The provenance record of a sampling: prior, spec, acceptance and targets.
    pub fn record(
        &self,
        prior: &GaussianPrior,
        prior_file: &std::path::Path,
        spec: &SamplingSpec,
    ) -> serde_json::Value {
        let (_, all) = self.rates();
        serde_json::json!({
            "prior": prior_file, "domain": prior.name, "kind": prior.kind.to_string(), "spec": spec,
            "tried": self.tried, "accepted": self.accepted.nrows(), "acceptance": all,
            "acceptance_per_test": self.rates_json(),
            "targets": {
                "distance": self.targets.distance, "origin_angle_deg": self.targets.origin_angle,
                "pair_angle_deg": self.targets.pair_angle,
                "norm": self.targets.norm, "norm_mean": self.targets.norm_mean, "norm_std": self.targets.norm_std,
            },
            "mean_scale": self.mean_scale, "spread_scale": self.spread_scale, "ring_factors": self.ring_factors,
        })
    }

    /// The accepted latents as a (count, C, H, W) array.
    pub fn accepted_array(&self, shape: [usize; 3]) -> ndarray::Array4<f32> {
        let [c, h, w] = shape;
        let n = self.accepted.nrows();
        self.accepted.clone().into_shape_with_order((n, c, h, w)).expect("latents match the prior's shape")
    }
}

/// The global few-shot correction (see the module notes): the mean's factor s and the spread's
/// factor √(1 + 1/N).
pub fn debias_factors(prior: &GaussianPrior) -> (f64, f64) {
    let n = prior.n as f64;
    let mu2 = prior.mean.dot(&prior.mean);
    let b = prior.dim() as f64 * prior.mean_variance() / n;
    let s = if mu2 > 0.0 { (1.0 - b / mu2).max(0.0) } else { 1.0 };
    (s, (1.0 + 1.0 / n).sqrt())
}

/// Where draws are centred and how they are spread: (centre, spread factor, ring factors).
/// `z` are the real latents the prior was fitted on (the per-ring noise comes from them).
pub fn draw_centre(prior: &GaussianPrior, z: &Array2<f32>, debias: Debias) -> (Array1<f64>, f64, Option<Vec<f64>>) {
    match debias {
        Debias::None => (prior.mean.clone(), 1.0, None),
        Debias::Global => {
            let (s, spread) = debias_factors(prior);
            (&prior.mean * s, spread, None)
        }
        Debias::Rings => {
            let spectra = super::spectral::CrossSpectra::estimate(z, prior.mean.view(), prior.shape);
            let js = super::spectral::RingShrinkage::fit(prior.mean.view(), &spectra, prior.n);
            let centre = Array1::from(js.apply(prior.mean.view(), prior.shape));
            (centre, (1.0 + 1.0 / prior.n as f64).sqrt(), Some(js.factors))
        }
    }
}

/// `x` with its deviation from `centre` rescaled so that its norm is `target` (or, when no
/// scale reaches it, as close as the line through `centre` and `x` gets).
pub fn match_norm(x: &Array1<f64>, centre: &Array1<f64>, target: f64) -> Array1<f64> {
    let r = x - centre;
    let (a, b, c) = (r.dot(&r), 2.0 * centre.dot(&r), centre.dot(centre) - target * target);
    if a <= 0.0 {
        return x.clone();
    }
    let disc = b * b - 4.0 * a * c;
    let scale = if disc >= 0.0 { (-b + disc.sqrt()) / (2.0 * a) } else { -b / (2.0 * a) };
    centre + &(r * scale.max(0.0))
}

/// Fails unless `lo`–`hi` is a band of percentiles: 0 <= LOW < HIGH <= 100.
pub fn check_band(lo: f64, hi: f64) -> Result<()> {
    if !(0.0..100.0).contains(&lo) || !(lo < hi && hi <= 100.0) {
        return Err(Error::Invalid(format!("band {lo}–{hi} %: need 0 <= LOW < HIGH <= 100")));
    }
    Ok(())
}

/// Fails unless latents of `d` values per map fit `prior`.
pub fn check_dimension(prior: &GaussianPrior, d: usize) -> Result<()> {
    if d != prior.dim() {
        return Err(Error::Invalid(format!("latents have d = {d}, the prior d = {}", prior.dim())));
    }
    Ok(())
}

/// Draws candidates until `spec.count` pass every enabled test, or fails with the acceptance
/// rates when the budget cannot reach the count.
pub fn sample_latents(prior: &GaussianPrior, z: &Array2<f32>, spec: &SamplingSpec) -> Result<SamplingOutcome> {
    check_dimension(prior, z.ncols())?;
    super::check_latents(z, &prior.name)?;
    if spec.count == 0 {
        return Err(Error::Invalid("count must be at least 1".into()));
    }
    // Separate streams: more candidates never change the targets.
    let mut target_rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5EED_CA4D);
    let targets = Targets::from_latents(z, spec.tests, &mut target_rng)?;
    let (centre, spread_scale, ring_factors) = draw_centre(prior, z, spec.debias);
    let mu_norm = prior.mean.dot(&prior.mean).sqrt();
    let mean_scale = if mu_norm > 0.0 { centre.dot(&centre).sqrt() / mu_norm } else { 1.0 };
    let n = z.nrows();
    // Room for every latent asked for, so that the rows are never copied into a larger array (a
    // shape that overflows is left to grow as rows come).
    let mut accepted = Array2::zeros((0, z.ncols()));
    let _ = accepted.reserve_rows(spec.count.min(spec.budget));
    let mut out = SamplingOutcome {
        accepted,
        tried: 0,
        passed: [0; 4],
        passed_all: 0,
        targets,
        mean_scale,
        spread_scale,
        ring_factors,
    };
    // An empirical prior's draws are made DRAWS_AHEAD at a time (one pass over its latents for
    // all); each candidate takes its random numbers in the order one candidate at a time would,
    // so the accepted latents do not depend on it.
    let mut ahead = std::collections::VecDeque::new();
    while out.accepted.nrows() < spec.count {
        if out.tried >= spec.budget || unreachable(&out, spec) {
            let (_, all) = out.rates();
            return Err(Error::Invalid(format!(
                "only {} of {} requested latents passed after {} candidates (acceptance {:.2} %; {}); \
                 the budget of {} candidates cannot reach the count: widen the band, enable fewer tests, raise the \
            budget or ask for fewer",
                out.accepted.nrows(),
                spec.count,
                out.tried,
                100.0 * all,
                out.rates_text(),
                spec.budget
            )));
        }
        if ahead.is_empty() {
            let wanted = (spec.count - out.accepted.nrows()).min(spec.budget - out.tried).clamp(1, DRAWS_AHEAD);
            ahead = plan_candidates(prior, &centre, n, spec, wanted, &mut rng).into();
        }
        let c: Candidate = ahead.pop_front().expect("planned candidates");
        let draw = &centre + &((&c.draw - &centre) * spread_scale);
        let x = match c.slerp {
            None => draw,
            Some((r, t)) => slerp(row_f64(z, r).view(), draw.view(), t),
        };
        let x = match c.norm_normal {
            None => x,
            Some(normal) => {
                let target = out.targets.norm_mean + out.targets.norm_std * normal;
                match_norm(&x, &centre, target)
            }
        };
        let g = geometry_of(x.view(), z, &c.refs);
        let pass = out.targets.check(&g);
        out.tried += 1;
        for (p, ok) in out.passed.iter_mut().zip(pass) {
            *p += usize::from(ok);
        }
        if pass.iter().all(|&b| b) {
            out.passed_all += 1;
            out.accepted.push_row(x.mapv(|v| v as f32).view()).expect("a row of d values");
        }
    }
    Ok(out)
}

/// Candidates whose draws are made together, at most (an empirical prior's; the other kinds
/// draw one at a time).
const DRAWS_AHEAD: usize = 32;

/// One candidate's draw and random choices.
struct Candidate {
    draw: Array1<f64>,
    /// The real latent and the position along the arc (slerp candidates).
    slerp: Option<(usize, f64)>,
    /// The standard normal behind its target norm (matched norms).
    norm_normal: Option<f64>,
    /// The real latents the geometric tests compare it with.
    refs: Vec<usize>,
}

/// The next `count` candidates (1 unless the prior is empirical), each taking its random numbers
/// from `rng` in the order of one candidate at a time: the draw, the slerp's latent and position,
/// the norm's normal, the tests' latents. An empirical prior's draws are then made in one pass.
fn plan_candidates(
    prior: &GaussianPrior,
    centre: &Array1<f64>,
    n: usize,
    spec: &SamplingSpec,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Candidate> {
    let empirical = match &prior.covariance {
        crate::prior::Covariance::Empirical { deviations } => Some(deviations),
        _ => None,
    };
    let count = if empirical.is_some() { count } else { 1 };
    let mut weights = Vec::new();
    let mut planned = Vec::with_capacity(count);
    for _ in 0..count {
        let draw = match prior.empirical_weights(rng) {
            Some(w) => {
                weights.push(w);
                Array1::zeros(0)
            }
            None => prior.draw_around(centre.view(), rng),
        };
        let slerp = match spec.candidates {
            CandidateKind::Draw => None,
            CandidateKind::Slerp => {
                let r = rng.random_range(0..n);
                Some((r, rng.random_range(1..=20) as f64 / 21.0))
            }
        };
        let norm_normal = match spec.norm {
            NormMode::Free => None,
            NormMode::Match => Some(rng.sample::<f64, _>(rand_distr::StandardNormal)),
        };
        let refs = sample(rng, n, spec.tests.k).into_vec();
        planned.push(Candidate { draw, slerp, norm_normal, refs });
    }
    if let Some(deviations) = empirical {
        for (c, draw) in planned.iter_mut().zip(deviations.combinations(&prior.mean, centre.view(), &weights)) {
            c.draw = draw;
        }
    }
    planned
}

/// After a tenth of the budget (at least 200 candidates), stop when even the observed rate
/// (with one extra success, to be generous) cannot fill the count in the remaining budget.
fn unreachable(out: &SamplingOutcome, spec: &SamplingSpec) -> bool {
    let warm = (spec.budget / 10).max(200);
    if out.tried < warm {
        return false;
    }
    let rate = (out.passed_all as f64 + 1.0) / (out.tried as f64 + 1.0);
    let expected = out.accepted.nrows() as f64 + rate * (spec.budget - out.tried) as f64;
    expected < spec.count as f64
}

/// Rows of a latent stack (N, C, H, W) as an N × d matrix.
pub fn flatten(latents: &ndarray::Array4<f32>) -> Array2<f32> {
    let n = latents.len_of(Axis(0));
    let d = latents.len() / n.max(1);
    Array2::from_shape_vec((n, d), latents.as_standard_layout().iter().copied().collect()).expect("shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::tests::f32s;
    use crate::prior::{Covariance, GaussianPrior, PriorKind};
    use ndarray::array;
    use rand_distr::StandardNormal;
    use std::sync::Arc;

    #[test]
    fn the_default_tests_are_the_configs_defaults() {
        let config_default =
            TestSpec::parse(DEFAULT_K, (DEFAULT_BAND[0], DEFAULT_BAND[1]), &TEST_NAMES.map(String::from)).unwrap();
        assert_eq!(TestSpec::default(), config_default);
    }
    #[test]
    fn slerp_edge_cases() {
        let a = array![1.0, 0.0];
        let b = array![0.0, 2.0];
        let m = slerp(a.view(), b.view(), 0.5);
        assert!((m.dot(&m).sqrt() - 1.5).abs() < 1e-12, "norm interpolates linearly");
        assert!((m[0] - m[1]).abs() < 1e-12, "direction is halfway");
        assert_eq!(slerp(a.view(), b.view(), 0.0), a);
        assert!((slerp(a.view(), b.view(), 1.0) - &b).iter().all(|v| v.abs() < 1e-12));
        // Identical and opposite vectors fall back to a straight line, without NaN.
        assert_eq!(slerp(a.view(), a.view(), 0.3), a);
        let o = slerp(a.view(), (-&a).view(), 0.25);
        assert!(o.iter().all(|v| v.is_finite()));
        assert!((o[0] - 0.5).abs() < 1e-12);
    }

    fn cloud(n: usize, d: usize, mu: &Array1<f64>, s: f64, rng: &mut ChaCha8Rng) -> Arc<Array2<f32>> {
        f32s(&Array2::from_shape_fn((n, d), |(_, j)| mu[j] + s * rng.sample::<f64, _>(StandardNormal)))
    }

    #[test]
    fn the_filter_accepts_true_members_at_the_band_rate_and_rejects_the_model_prior() {
        let (n, d) = (60, 3000);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // ‖μ‖ ≈ 0.4·√d·s: a shared direction, as inverted out-of-domain latents have.
        let mu = Array1::from_iter((0..d).map(|j| if j % 2 == 0 { 0.4 } else { 0.3 }));
        let z = cloud(n, d, &mu, 1.0, &mut rng);
        let spec = TestSpec::default();
        let targets = Targets::from_latents(&z, spec, &mut rng).unwrap();
        let rate = |pts: &Array2<f32>, rng: &mut ChaCha8Rng| {
            let mut pass = [0usize; 4];
            for i in 0..pts.nrows() {
                let refs = sample(rng, n, spec.k).into_vec();
                let ok = targets.check(&geometry_of(row_f64(pts, i).view(), &z, &refs));
                for (p, o) in pass.iter_mut().zip(ok) {
                    *p += usize::from(o);
                }
            }
            pass.map(|p| p as f64 / pts.nrows() as f64)
        };
        let members = cloud(400, d, &mu, 1.0, &mut rng);
        for r in &rate(&members, &mut rng)[..3] {
            assert!((r - 0.9).abs() < 0.1, "true members pass a test at {r}");
        }
        let model_prior = cloud(400, d, &Array1::zeros(d), 1.0, &mut rng);
        let r = rate(&model_prior, &mut rng);
        assert!(r[1] < 0.01, "N(0, I) draws pass the origin-angle test at {}", r[1]);
        // Debiased prior draws behave like members.
        let prior = GaussianPrior::fit("c", &z, [1, 30, 100], PriorKind::Scalar).unwrap();
        let sspec = SamplingSpec {
            count: 50,
            candidates: CandidateKind::Draw,
            tests: spec,
            budget: 2000,
            seed: 3,
            debias: Debias::Global,
            norm: NormMode::Free,
        };
        let out = sample_latents(&prior, &z, &sspec).unwrap();
        let (per, all) = out.rates();
        assert!(per.iter().all(|&p| p > 0.6), "debiased draws: {per:?}");
        assert!(all > 0.4, "joint acceptance {all}");
        let raw = SamplingSpec { debias: Debias::None, budget: 20_000, count: 5, ..sspec };
        match sample_latents(&prior, &z, &raw) {
            Ok(o) => assert!(o.rates().1 < all, "without debiasing, acceptance should drop: {} vs {all}", o.rates().1),
            Err(e) => assert!(e.to_string().contains("acceptance")),
        }
    }

    /// The sampling loop as it was before an empirical prior's draws were made together: one
    /// candidate at a time, its draw through `draw_around`.
    fn one_at_a_time(prior: &GaussianPrior, z: &Array2<f32>, spec: &SamplingSpec) -> (Array2<f32>, usize) {
        let mut target_rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5EED_CA4D);
        let targets = Targets::from_latents(z, spec.tests, &mut target_rng).unwrap();
        let (centre, spread_scale, _) = draw_centre(prior, z, spec.debias);
        let (mut accepted, mut tried) = (Array2::zeros((0, z.ncols())), 0);
        while accepted.nrows() < spec.count {
            let draw = prior.draw_around(centre.view(), &mut rng);
            let draw = &centre + &((&draw - &centre) * spread_scale);
            let x = match spec.candidates {
                CandidateKind::Draw => draw,
                CandidateKind::Slerp => {
                    let r = rng.random_range(0..z.nrows());
                    let t = rng.random_range(1..=20) as f64 / 21.0;
                    slerp(row_f64(z, r).view(), draw.view(), t)
                }
            };
            let x = match spec.norm {
                NormMode::Free => x,
                NormMode::Match => {
                    let target = targets.norm_mean + targets.norm_std * rng.sample::<f64, _>(StandardNormal);
                    match_norm(&x, &centre, target)
                }
            };
            let refs: Vec<usize> = sample(&mut rng, z.nrows(), spec.tests.k).into_vec();
            tried += 1;
            if targets.check(&geometry_of(x.view(), z, &refs)).iter().all(|&b| b) {
                accepted.push_row(x.mapv(|v| v as f32).view()).unwrap();
            }
        }
        (accepted, tried)
    }

    #[test]
    fn candidates_made_together_are_those_made_one_at_a_time() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let (n, d) = (30, 700);
        let z = cloud(n, d, &Array1::from_elem(d, 0.3), 1.0, &mut rng);
        for kind in [PriorKind::Empirical, PriorKind::Diagonal] {
            let prior = GaussianPrior::fit("t", &z, [7, 10, 10], kind).unwrap();
            for (candidates, norm, count) in
                [(CandidateKind::Draw, NormMode::Match, 45), (CandidateKind::Slerp, NormMode::Free, 3)]
            {
                let spec = SamplingSpec {
                    count,
                    candidates,
                    tests: TestSpec { k: 5, ..TestSpec::default() },
                    budget: 5000,
                    seed: 11,
                    debias: Debias::Rings,
                    norm,
                };
                let got = sample_latents(&prior, &z, &spec).unwrap();
                let (accepted, tried) = one_at_a_time(&prior, &z, &spec);
                assert_eq!((got.accepted, got.tried), (accepted, tried), "{kind:?} {candidates:?}");
            }
        }
    }

    #[test]
    fn sampling_is_reproducible_and_gives_up_with_rates() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (20, 500);
        let mu = Array1::from_elem(d, 0.5);
        let z = cloud(n, d, &mu, 1.0, &mut rng);
        let prior = GaussianPrior::fit("c", &z, [1, 20, 25], PriorKind::Scalar).unwrap();
        let spec = SamplingSpec {
            count: 5,
            candidates: CandidateKind::Slerp,
            tests: TestSpec { k: 5, ..TestSpec::default() },
            budget: 5000,
            seed: 9,
            debias: Debias::Global,
            norm: NormMode::Free,
        };
        let a = sample_latents(&prior, &z, &spec).unwrap();
        let b = sample_latents(&prior, &z, &spec).unwrap();
        assert_eq!(a.accepted, b.accepted);
        assert_eq!(a.tried, b.tried);
        let tight =
            SamplingSpec { tests: TestSpec { band: (49.9, 50.1), k: 5, ..TestSpec::default() }, budget: 300, ..spec };
        let e = sample_latents(&prior, &z, &tight).unwrap_err().to_string();
        assert!(e.contains("acceptance") && e.contains("budget"), "{e}");
    }

    /// Latents whose norms are far more alike than their Gaussian covariance implies, as
    /// inverted latents are: each row rescaled to a norm from N(√d, 0.2²).
    fn shell(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Arc<Array2<f32>> {
        let mu = Array1::from_iter((0..d).map(|j| if j % 3 == 0 { 0.3 } else { 0.0 }));
        let mut z = Array2::from_shape_fn((n, d), |(_, j)| mu[j] + rng.sample::<f64, _>(StandardNormal));
        for mut row in z.rows_mut() {
            let target = (d as f64).sqrt() + 0.2 * rng.sample::<f64, _>(StandardNormal);
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|v| v * target / norm);
        }
        f32s(&z)
    }

    fn norms(v: &Array2<f32>) -> (f64, f64) {
        let x: Vec<f64> = v.rows().into_iter().map(|r| r.mapv(f64::from)).map(|r| r.dot(&r).sqrt()).collect();
        let m = x.iter().sum::<f64>() / x.len() as f64;
        (m, (x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt())
    }

    #[test]
    fn matched_draws_keep_the_norm_statistics_they_were_fitted_to() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let (n, d) = (24, 2000);
        let z = shell(n, d, &mut rng);
        let prior = GaussianPrior::fit("s", &z, [1, 40, 50], PriorKind::Scalar).unwrap();
        let tests =
            TestSpec { distance: false, origin_angle: false, pair_angle: false, norm: false, ..TestSpec::default() };
        let spec = SamplingSpec {
            count: 400,
            candidates: CandidateKind::Draw,
            tests,
            budget: 400,
            seed: 1,
            debias: Debias::None,
            norm: NormMode::Free,
        };
        let free = sample_latents(&prior, &z, &spec).unwrap();
        let matched = sample_latents(&prior, &z, &SamplingSpec { norm: NormMode::Match, ..spec }).unwrap();
        let (m, s) = (free.targets.norm_mean, free.targets.norm_std);
        let (fm, fs) = norms(&free.accepted);
        let (mm, ms) = norms(&matched.accepted);
        // Free draws around μ̂ with the fitted variance come out longer and spread ~σ/√2 ≈ 0.7.
        assert!(fs > 2.0 * s && fm > m + 0.3, "free draws: {fm} ± {fs} vs real {m} ± {s}");
        assert!(
            (mm - m).abs() < 3.0 * s / 20.0 + 0.02 && (ms / s - 1.0).abs() < 0.2,
            "matched: {mm} ± {ms} vs real {m} ± {s}"
        );
        // The norm test accepts matched draws at about the band's rate, and free ones rarely.
        let with_test = TestSpec { norm: true, ..tests };
        let (lo, hi) = free.targets.norm;
        let inside =
            |v: ndarray::ArrayView1<f32>| (lo..=hi).contains(&v.mapv(f64::from).dot(&v.mapv(f64::from)).sqrt());
        let free_rate =
            free.accepted.rows().into_iter().filter(|v| inside(*v)).count() as f64 / free.accepted.nrows() as f64;
        let g = sample_latents(
            &prior,
            &z,
            &SamplingSpec { tests: with_test, norm: NormMode::Match, count: 200, budget: 2000, ..spec },
        )
        .unwrap();
        assert!((g.rates().1 - 0.9).abs() < 0.12, "matched acceptance {}", g.rates().1);
        assert!(free_rate < 0.5 * g.rates().1, "free draws pass the norm test at {free_rate}");
    }

    #[test]
    fn ring_debiasing_keeps_the_level_that_global_debiasing_shrinks() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let (n, shape) = (16, [1usize, 16, 16]);
        let d = 256;
        // A common level of 0.1 per pixel (k = 0 amplitude 1.6) plus unit white noise.
        let z = f32s(&Array2::from_shape_fn((n, d), |_| 0.1 + rng.sample::<f64, _>(StandardNormal)));
        let prior = GaussianPrior::fit("l", &z, shape, PriorKind::Scalar).unwrap();
        let level = |c: &Array1<f64>| c.sum() / d as f64;
        let (global, _, _) = draw_centre(&prior, &z, Debias::Global);
        let (rings, _, factors) = draw_centre(&prior, &z, Debias::Rings);
        let truth = level(&prior.mean);
        assert!(level(&global).abs() < 0.5 * truth.abs(), "global keeps {} of {truth}", level(&global));
        assert!((level(&rings) - truth).abs() < 0.1 * truth.abs(), "rings keep {} of {truth}", level(&rings));
        assert!(factors.unwrap()[0] > 0.9);
    }

    #[test]
    fn empirical_draws_are_combinations_of_the_real_deviations() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (n, d) = (12, 300);
        let z = cloud(n, d, &Array1::from_elem(d, 0.2), 1.0, &mut rng);
        let prior = GaussianPrior::fit("e", &z, [3, 10, 10], PriorKind::Empirical).unwrap();
        let x = prior.draw(&mut rng) - &prior.mean;
        // Least squares of x on the residuals leaves nothing: x lies in their span.
        let Covariance::Empirical { deviations } = &prior.covariance else { panic!() };
        let residuals = deviations.to_matrix(&prior.mean);
        let gram = residuals.dot(&residuals.t());
        let (vals, vecs) = crate::prior::linalg::symmetric_eigen(&gram);
        let mut proj = Array1::<f64>::zeros(d);
        for k in 0..n {
            if vals[k] > 1e-9 * vals[0] {
                let u = residuals.t().dot(&vecs.column(k)) / vals[k].sqrt();
                proj = proj + &u * u.dot(&x);
            }
        }
        let left = &x - &proj;
        assert!(left.dot(&left) < 1e-16 * x.dot(&x) + 1e-18);
        assert!((prior.mean_variance() - 1.0).abs() < 0.1);
    }
}
