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
//! Few-shot bias: with N latents the fitted mean μ̂ carries the sampling noise of its own
//! members, so ‖μ̂‖² exceeds ‖μ‖² by about d·σ²/N and a draw from N(μ̂, σ²) lies closer to the
//! real latents than they lie to each other. With `debias` (the default) draws come from
//! N(s·μ̂, (1 + 1/N)·Σ) with s = 1 − d·σ²/(N·‖μ̂‖²): then the expected dot product of a draw with
//! a real latent is ‖μ‖², and its expected squared distance to one is 2·d·σ², as for two real
//! latents.

use ndarray::{Array1, Array2, ArrayView1, Axis};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::GaussianPrior;
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

fn angle_deg(u: ArrayView1<f64>, v: ArrayView1<f64>) -> f64 {
    let c = u.dot(&v) / (u.dot(&u).sqrt() * v.dot(&v).sqrt());
    c.clamp(-1.0, 1.0).acos().to_degrees()
}

/// The three statistics of a point against reference latents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub distance: f64,
    pub origin_angle: f64,
    pub pair_angle: f64,
}

/// Statistics of `x` against the rows `refs` of `z` (at least two).
pub fn geometry_of(x: ArrayView1<f64>, z: &Array2<f64>, refs: &[usize]) -> Geometry {
    let k = refs.len() as f64;
    let diffs: Vec<Array1<f64>> = refs.iter().map(|&r| &z.row(r) - &x).collect();
    let distance = diffs.iter().map(|d| d.dot(d).sqrt()).sum::<f64>() / k;
    let origin_angle = refs.iter().map(|&r| angle_deg(x, z.row(r))).sum::<f64>() / k;
    let pairs = diffs.windows(2).map(|w| angle_deg(w[0].view(), w[1].view())).sum::<f64>() / (k - 1.0);
    Geometry { distance, origin_angle, pair_angle: pairs }
}

/// Which tests are on, K and the accepted quantile band (percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestSpec {
    pub k: usize,
    pub band: (f64, f64),
    pub distance: bool,
    pub origin_angle: bool,
    pub pair_angle: bool,
}

impl TestSpec {
    /// K, the band (percent) and the tests named (any of `distance`, `origin`, `pair`).
    pub fn parse(k: usize, band: (f64, f64), tests: &[String]) -> Result<TestSpec> {
        let mut spec = TestSpec { k, band, distance: false, origin_angle: false, pair_angle: false };
        for t in tests {
            match t.as_str() {
                "distance" => spec.distance = true,
                "origin" => spec.origin_angle = true,
                "pair" => spec.pair_angle = true,
                o => return Err(Error::Invalid(format!("unknown test '{o}' (distance, origin, pair)"))),
            }
        }
        Ok(spec)
    }
}

impl Default for TestSpec {
    fn default() -> Self {
        TestSpec { k: 10, band: (5.0, 95.0), distance: true, origin_angle: true, pair_angle: true }
    }
}

/// Accepted interval of each statistic, with the leave-one-out values they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    pub spec: TestSpec,
    pub distance: (f64, f64),
    pub origin_angle: (f64, f64),
    pub pair_angle: (f64, f64),
    /// Leave-one-out statistics of every real latent.
    pub real: Vec<Geometry>,
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    crate::prep::transform::percentile_sorted(values, q)
}

impl Targets {
    /// Leave-one-out targets from the real latents `z` (rows).
    pub fn from_latents(z: &Array2<f64>, spec: TestSpec, rng: &mut ChaCha8Rng) -> Result<Targets> {
        let n = z.nrows();
        if spec.k < 2 || spec.k > n - 1 {
            return Err(Error::Invalid(format!("K = {} real latents per test needs 2 <= K <= N − 1 = {}", spec.k, n - 1)));
        }
        let (lo, hi) = spec.band;
        if !(0.0..100.0).contains(&lo) || !(lo < hi && hi <= 100.0) {
            return Err(Error::Invalid(format!("band {lo}–{hi} %: need 0 <= LOW < HIGH <= 100")));
        }
        let real: Vec<Geometry> = (0..n)
            .map(|i| {
                let refs: Vec<usize> = sample(rng, n - 1, spec.k).into_iter().map(|r| if r >= i { r + 1 } else { r }).collect();
                geometry_of(z.row(i), z, &refs)
            })
            .collect();
        let band = |f: fn(&Geometry) -> f64| {
            let mut v: Vec<f64> = real.iter().map(f).collect();
            (quantile(&mut v, lo), quantile(&mut v, hi))
        };
        Ok(Targets {
            spec,
            distance: band(|g| g.distance),
            origin_angle: band(|g| g.origin_angle),
            pair_angle: band(|g| g.pair_angle),
            real,
        })
    }

    /// Which enabled tests a point passes: (distance, origin angle, pair angle); disabled tests
    /// pass.
    pub fn check(&self, g: &Geometry) -> [bool; 3] {
        let inside = |v: f64, (a, b): (f64, f64)| v >= a && v <= b;
        [
            !self.spec.distance || inside(g.distance, self.distance),
            !self.spec.origin_angle || inside(g.origin_angle, self.origin_angle),
            !self.spec.pair_angle || inside(g.pair_angle, self.pair_angle),
        ]
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

impl std::str::FromStr for CandidateKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "draw" | "prior" => Ok(CandidateKind::Draw),
            "slerp" => Ok(CandidateKind::Slerp),
            o => Err(Error::Invalid(format!("unknown candidate kind '{o}' (draw or slerp)"))),
        }
    }
}

/// Everything that decides which latents `sample` returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub count: usize,
    pub candidates: CandidateKind,
    pub tests: TestSpec,
    /// Most candidates examined before giving up.
    pub budget: usize,
    pub seed: u64,
    pub debias: bool,
}

/// Accepted latents and the bookkeeping that goes into the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingOutcome {
    #[serde(skip)]
    pub accepted: Vec<Array1<f64>>,
    pub tried: usize,
    /// Candidates that passed each test (distance, origin angle, pair angle) and all of them.
    pub passed: [usize; 3],
    pub passed_all: usize,
    pub targets: Targets,
    /// Scale applied to μ̂ for draws (1 without debiasing).
    pub mean_scale: f64,
    /// Factor applied to the prior's standard deviations for draws.
    pub spread_scale: f64,
}

impl SamplingOutcome {
    /// Acceptance rate of each test and of all together.
    pub fn rates(&self) -> ([f64; 3], f64) {
        let t = self.tried.max(1) as f64;
        ([self.passed[0] as f64 / t, self.passed[1] as f64 / t, self.passed[2] as f64 / t], self.passed_all as f64 / t)
    }

    /// The provenance record of a sampling: prior, spec, acceptance and targets.
    pub fn record(&self, prior: &GaussianPrior, prior_file: &std::path::Path, spec: &SamplingSpec) -> serde_json::Value {
        let (rates, all) = self.rates();
        serde_json::json!({
            "prior": prior_file, "domain": prior.name, "kind": prior.kind.to_string(), "spec": spec,
            "tried": self.tried, "accepted": self.accepted.len(), "acceptance": all,
            "acceptance_per_test": {"distance": rates[0], "origin_angle": rates[1], "pair_angle": rates[2]},
            "targets": {"distance": self.targets.distance, "origin_angle_deg": self.targets.origin_angle, "pair_angle_deg": self.targets.pair_angle},
            "mean_scale": self.mean_scale, "spread_scale": self.spread_scale,
        })
    }

    /// The accepted latents as a (count, C, H, W) array.
    pub fn accepted_array(&self, shape: [usize; 3]) -> ndarray::Array4<f32> {
        let [c, h, w] = shape;
        let flat: Vec<f32> = self.accepted.iter().flat_map(|x| x.iter().map(|&v| v as f32)).collect();
        ndarray::Array4::from_shape_vec((self.accepted.len(), c, h, w), flat).expect("latents match the prior's shape")
    }
}

/// The few-shot corrections of the draw distribution (see the module notes).
pub fn debias_factors(prior: &GaussianPrior) -> (f64, f64) {
    let n = prior.n as f64;
    let mu2 = prior.mean.dot(&prior.mean);
    let b = prior.dim() as f64 * prior.mean_variance() / n;
    let s = if mu2 > 0.0 { (1.0 - b / mu2).max(0.0) } else { 1.0 };
    (s, (1.0 + 1.0 / n).sqrt())
}

/// Draws candidates until `spec.count` pass every enabled test, or fails with the acceptance
/// rates when the budget cannot reach the count.
pub fn sample_latents(prior: &GaussianPrior, z: &Array2<f64>, spec: &SamplingSpec) -> Result<SamplingOutcome> {
    if z.ncols() != prior.dim() {
        return Err(Error::Invalid(format!("latents have d = {}, the prior d = {}", z.ncols(), prior.dim())));
    }
    super::check_latents(z, &prior.name)?;
    if spec.count == 0 {
        return Err(Error::Invalid("count must be at least 1".into()));
    }
    // Separate streams: more candidates never change the targets.
    let mut target_rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5EED_CA4D);
    let targets = Targets::from_latents(z, spec.tests, &mut target_rng)?;
    let (mean_scale, spread_scale) = if spec.debias { debias_factors(prior) } else { (1.0, 1.0) };
    let centre = &prior.mean * mean_scale;
    let n = z.nrows();
    let mut out = SamplingOutcome { accepted: Vec::new(), tried: 0, passed: [0; 3], passed_all: 0, targets, mean_scale, spread_scale };
    while out.accepted.len() < spec.count {
        if out.tried >= spec.budget || unreachable(&out, spec) {
            let (r, all) = out.rates();
            return Err(Error::Invalid(format!(
                "only {} of {} requested latents passed after {} candidates (acceptance {:.2} %; distance {:.1} %, origin angle {:.1} %, pair angle {:.1} %); \
                 the budget of {} candidates cannot reach the count: widen the band, enable fewer tests, raise the budget or ask for fewer",
                out.accepted.len(),
                spec.count,
                out.tried,
                100.0 * all,
                100.0 * r[0],
                100.0 * r[1],
                100.0 * r[2],
                spec.budget
            )));
        }
        let draw = prior.draw_around(centre.view(), &mut rng);
        let draw = &centre + &((&draw - &centre) * spread_scale);
        let x = match spec.candidates {
            CandidateKind::Draw => draw,
            CandidateKind::Slerp => {
                let r = rng.random_range(0..n);
                let t = rng.random_range(1..=20) as f64 / 21.0;
                slerp(z.row(r), draw.view(), t)
            }
        };
        let refs: Vec<usize> = sample(&mut rng, n, spec.tests.k).into_vec();
        let g = geometry_of(x.view(), z, &refs);
        let pass = out.targets.check(&g);
        out.tried += 1;
        for (p, ok) in out.passed.iter_mut().zip(pass) {
            *p += usize::from(ok);
        }
        if pass.iter().all(|&b| b) {
            out.passed_all += 1;
            out.accepted.push(x);
        }
    }
    Ok(out)
}

/// After a tenth of the budget (at least 200 candidates), stop when even the observed rate
/// (with one extra success, to be generous) cannot fill the count in the remaining budget.
fn unreachable(out: &SamplingOutcome, spec: &SamplingSpec) -> bool {
    let warm = (spec.budget / 10).max(200);
    if out.tried < warm {
        return false;
    }
    let rate = (out.passed_all as f64 + 1.0) / (out.tried as f64 + 1.0);
    let expected = out.accepted.len() as f64 + rate * (spec.budget - out.tried) as f64;
    expected < spec.count as f64
}

/// Rows of a latent stack (N, C, H, W) as an N × d f64 matrix.
pub fn flatten(latents: &ndarray::Array4<f32>) -> Array2<f64> {
    let n = latents.len_of(Axis(0));
    let d = latents.len() / n.max(1);
    Array2::from_shape_vec((n, d), latents.as_standard_layout().iter().map(|&v| v as f64).collect()).expect("shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::{PriorKind, GaussianPrior};
    use ndarray::array;
    use rand_distr::StandardNormal;

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

    fn cloud(n: usize, d: usize, mu: &Array1<f64>, s: f64, rng: &mut ChaCha8Rng) -> Array2<f64> {
        Array2::from_shape_fn((n, d), |(_, j)| mu[j] + s * rng.sample::<f64, _>(StandardNormal))
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
        let rate = |pts: &Array2<f64>, rng: &mut ChaCha8Rng| {
            let mut pass = [0usize; 3];
            for x in pts.axis_iter(Axis(0)) {
                let refs = sample(rng, n, spec.k).into_vec();
                let ok = targets.check(&geometry_of(x, &z, &refs));
                for (p, o) in pass.iter_mut().zip(ok) {
                    *p += usize::from(o);
                }
            }
            pass.map(|p| p as f64 / pts.nrows() as f64)
        };
        let members = cloud(400, d, &mu, 1.0, &mut rng);
        for r in rate(&members, &mut rng) {
            assert!((r - 0.9).abs() < 0.1, "true members pass a test at {r}");
        }
        let model_prior = cloud(400, d, &Array1::zeros(d), 1.0, &mut rng);
        let r = rate(&model_prior, &mut rng);
        assert!(r[1] < 0.01, "N(0, I) draws pass the origin-angle test at {}", r[1]);
        // Debiased prior draws behave like members.
        let prior = GaussianPrior::fit("c", &z, [1, 30, 100], PriorKind::Scalar).unwrap();
        let sspec = SamplingSpec { count: 50, candidates: CandidateKind::Draw, tests: spec, budget: 2000, seed: 3, debias: true };
        let out = sample_latents(&prior, &z, &sspec).unwrap();
        let (per, all) = out.rates();
        assert!(per.iter().all(|&p| p > 0.6), "debiased draws: {per:?}");
        assert!(all > 0.4, "joint acceptance {all}");
        let raw = SamplingSpec { debias: false, budget: 20_000, count: 5, ..sspec };
        match sample_latents(&prior, &z, &raw) {
            Ok(o) => assert!(o.rates().1 < all, "without debiasing, acceptance should drop: {} vs {all}", o.rates().1),
            Err(e) => assert!(e.to_string().contains("acceptance")),
        }
    }

    #[test]
    fn sampling_is_reproducible_and_gives_up_with_rates() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (20, 500);
        let mu = Array1::from_elem(d, 0.5);
        let z = cloud(n, d, &mu, 1.0, &mut rng);
        let prior = GaussianPrior::fit("c", &z, [1, 20, 25], PriorKind::Scalar).unwrap();
        let spec = SamplingSpec { count: 5, candidates: CandidateKind::Slerp, tests: TestSpec { k: 5, ..TestSpec::default() }, budget: 5000, seed: 9, debias: true };
        let a = sample_latents(&prior, &z, &spec).unwrap();
        let b = sample_latents(&prior, &z, &spec).unwrap();
        assert_eq!(a.accepted, b.accepted);
        assert_eq!(a.tried, b.tried);
        let tight = SamplingSpec { tests: TestSpec { band: (49.9, 50.1), k: 5, ..TestSpec::default() }, budget: 300, ..spec };
        let e = sample_latents(&prior, &z, &tight).unwrap_err().to_string();
        assert!(e.contains("acceptance") && e.contains("budget"), "{e}");
    }
}
