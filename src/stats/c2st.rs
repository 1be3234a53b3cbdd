//! The classifier two-sample test (C2ST): can a simple classifier tell real from synthetic maps
//! by their statistics?
//!
//! Each map is one row of features (the battery's per-map curves, one after the other). A
//! logistic regression with an L2 penalty (scikit-learn's `LogisticRegression(C = 1)` objective)
//! is trained on standardized features (mean and scale of the training rows only) and scored on
//! held-out maps by stratified k-fold cross-validation, repeated with fresh folds. The classes are
//! balanced in every repeat: the larger set gives a random subset of the smaller one's size. The
//! accuracy is the share of held-out maps classified right, averaged over the repeats: 0.5 when
//! the two sets are samples of one distribution, 1 when every map gives itself away. Its spread is
//! the standard deviation over the repeats.
//!
//! The **floor** is the same test between two random halves of the real maps: what the classifier
//! reaches on samples of one domain of that size (about 0.5, noisier with fewer maps).
//!
//! Every repeat's folds and subsets come from one seed ([`C2stOptions::seed`]); repeat `r` draws
//! from its own stream, so adding repeats does not change the earlier ones, and the repeats run in
//! parallel with results independent of the thread count.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::battery::Statistic;

/// Settings of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C2stOptions {
    /// Folds of the stratified cross-validation (at least 2).
    pub folds: usize,
    /// Repeats of the cross-validation, each with new folds and class subsets.
    pub repeats: usize,
    /// Inverse L2 penalty (scikit-learn's `C`): the objective is Σ log-loss + ‖w‖²/(2C).
    pub c: f64,
    /// Seed of the folds and subsets.
    pub seed: u64,
}

impl Default for C2stOptions {
    fn default() -> Self {
        C2stOptions { folds: 5, repeats: 10, c: 1.0, seed: 0 }
    }
}

impl C2stOptions {
    /// The fewest maps each class needs: one per fold.
    pub fn min_per_class(&self) -> usize {
        self.folds
    }

    /// Refuses settings that cannot run (the folds and repeats as [`Error::Setting`]s of the
    /// `[validation]` keys that give them).
    pub fn check(&self) -> Result<()> {
        if self.folds < 2 {
            return Err(Error::setting("c2st_folds", format!("must be at least 2, got {}", self.folds)));
        }
        if self.repeats < 1 {
            return Err(Error::setting("c2st_repeats", format!("must be at least 1, got {}", self.repeats)));
        }
        if !(self.c > 0.0 && self.c.is_finite()) {
            return Err(Error::Invalid(format!("the C2ST's C must be a positive number, got {}", self.c)));
        }
        Ok(())
    }
}

/// An L2-penalized logistic regression: P(class 1 | x) = σ(w·x + b), fitted by Newton's method to
/// the minimum of Σ_i log(1 + exp(−s_i (w·x_i + b))) + ‖w‖²/(2C) with s_i = ±1 (the intercept is
/// not penalized, as in scikit-learn).
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    pub weights: Array1<f64>,
    pub intercept: f64,
    /// Newton iterations taken.
    pub iterations: usize,
}

fn sigmoid(m: f64) -> f64 {
    if m >= 0.0 {
        1.0 / (1.0 + (-m).exp())
    } else {
        let e = m.exp();
        e / (1.0 + e)
    }
}

/// log(1 + exp(−m)) without overflow.
fn log_loss(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` (Cholesky); None when `a` is not.
fn cholesky_solve(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let d = a[[i, i]] - s;
                if !(d > 0.0) {
                    return None;
                }
                l[[i, i]] = d.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[[i, k]] * y[k]).sum::<f64>()) / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[[k, i]] * x[k]).sum::<f64>()) / l[[i, i]];
    }
    Some(x)
}

/// An orthonormal basis (columns, p × r) of the span of the rows of `x` (modified Gram–Schmidt,
/// twice, dropping rows that add less than 1e-10 of their norm).
fn row_space_basis(x: ArrayView2<f64>) -> Array2<f64> {
    let mut basis: Vec<Array1<f64>> = Vec::new();
    for row in x.rows() {
        let norm0 = row.dot(&row).sqrt();
        if !(norm0 > 0.0) {
            continue;
        }
        let mut v = row.to_owned();
        for _ in 0..2 {
            for q in &basis {
                let c = q.dot(&v);
                v.scaled_add(-c, q);
            }
        }
        let norm = v.dot(&v).sqrt();
        if norm > 1e-10 * norm0 {
            basis.push(v / norm);
        }
    }
    let mut q = Array2::<f64>::zeros((x.ncols(), basis.len()));
    for (j, b) in basis.iter().enumerate() {
        q.column_mut(j).assign(b);
    }
    q
}

impl LogisticRegression {
    /// Fits rows `x` with labels `y` (true = class 1). Errors when a class is missing or the
    /// features are not finite.
    ///
    /// With at least as many features as rows the fit runs in the span of the rows: the penalty
    /// is the same in every direction, so the optimal w lies there (the representer theorem) and
    /// the result is exact, at the cost of a problem of at most n dimensions.
    pub fn fit(x: ArrayView2<f64>, y: &[bool], c: f64) -> Result<LogisticRegression> {
        let (n, p) = x.dim();
        if y.len() != n || n == 0 {
            return Err(Error::Invalid(format!("logistic regression: {n} rows but {} labels", y.len())));
        }
        if y.iter().all(|&v| v) || y.iter().all(|&v| !v) {
            return Err(Error::Invalid("logistic regression needs rows of both classes".into()));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("logistic regression: features must be finite".into()));
        }
        let basis = (p >= n).then(|| row_space_basis(x));
        let z = match &basis {
            Some(q) => x.dot(q),
            None => x.to_owned(),
        };
        let (v, intercept, iterations) = newton(z.view(), y, 1.0 / c)?;
        let weights = match &basis {
            Some(q) => q.dot(&v),
            None => v,
        };
        Ok(LogisticRegression { weights, intercept, iterations })
    }

    /// w·x + b (positive: class 1 more likely).
    pub fn decision(&self, x: ArrayView1<f64>) -> f64 {
        x.dot(&self.weights) + self.intercept
    }
}

/// Newton's method with a backtracking line search on Σ log(1 + exp(−s_i (w·x_i + b))) + λ‖w‖²/2:
/// (w, b, iterations).
fn newton(x: ArrayView2<f64>, y: &[bool], lambda: f64) -> Result<(Array1<f64>, f64, usize)> {
    let (n, p) = x.dim();
    let s: Array1<f64> = y.iter().map(|&v| if v { 1.0 } else { -1.0 }).collect();
    // The design matrix with a column of ones for the intercept: θ = (w, b).
    let mut xt = Array2::<f64>::ones((n, p + 1));
    xt.slice_mut(ndarray::s![.., ..p]).assign(&x);
    let margins = |theta: &Array1<f64>| -> Array1<f64> { &s * &xt.dot(theta) };
    let objective = |theta: &Array1<f64>, m: &Array1<f64>| -> f64 {
        m.iter().map(|&v| log_loss(v)).sum::<f64>()
            + 0.5 * lambda * theta.slice(ndarray::s![..p]).iter().map(|w| w * w).sum::<f64>()
    };
    let mut theta = Array1::<f64>::zeros(p + 1);
    let mut m = margins(&theta);
    let mut f = objective(&theta, &m);
    for iteration in 0..200 {
        let q: Array1<f64> = m.mapv(|v| sigmoid(-v));
        let mut g = xt.t().dot(&(-&s * &q));
        let mut weighted = xt.clone();
        for (mut row, &qi) in weighted.rows_mut().into_iter().zip(&q) {
            row *= (qi * (1.0 - qi)).sqrt();
        }
        let mut h = weighted.t().dot(&weighted);
        for a in 0..p {
            g[a] += lambda * theta[a];
            h[[a, a]] += lambda;
        }
        let gmax = g.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        if gmax <= 1e-10 * (n as f64) {
            return Ok((theta.slice(ndarray::s![..p]).to_owned(), theta[p], iteration));
        }
        // The intercept's curvature vanishes on separable data: a tiny ridge keeps the system
        // solvable; the line search keeps every step a descent.
        h[[p, p]] += 1e-12 * (n as f64);
        let step = cholesky_solve(&h, &g)
            .ok_or_else(|| Error::Invalid("logistic regression: the Newton system is singular".into()))?;
        let slope = g.dot(&step);
        let mut t = 1.0;
        loop {
            let trial = &theta - &(t * &step);
            let mt = margins(&trial);
            let ft = objective(&trial, &mt);
            if ft <= f - 1e-4 * t * slope || t < 1e-10 {
                theta = trial;
                m = mt;
                f = ft;
                break;
            }
            t *= 0.5;
        }
    }
    Ok((theta.slice(ndarray::s![..p]).to_owned(), theta[p], 200))
}

/// Standardization fitted on training rows: (x − mean) / scale, columns without spread set to 0.
struct Standardizer {
    mean: Array1<f64>,
    scale: Array1<f64>,
}

impl Standardizer {
    fn fit(x: ArrayView2<f64>) -> Standardizer {
        let n = x.nrows() as f64;
        let mean = x.mean_axis(Axis(0)).expect("rows");
        // The population standard deviation, as scikit-learn's StandardScaler.
        let scale = x
            .axis_iter(Axis(1))
            .zip(&mean)
            .map(|(c, m)| (c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        Standardizer { mean, scale }
    }

    fn apply(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut out = x.to_owned();
        for mut row in out.rows_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                // scikit-learn leaves constant columns unscaled (scale 1); they are then zero.
                let s = if self.scale[j] > 0.0 { self.scale[j] } else { 1.0 };
                *v = (*v - self.mean[j]) / s;
            }
        }
        out
    }
}

/// Cross-validated accuracy with given folds: rows of fold `f` are predicted by a model fitted on
/// the others (standardized on them). Equal to scikit-learn's `cross_val_score` of
/// `make_pipeline(StandardScaler(), LogisticRegression(C=c))` with a `PredefinedSplit`, as the mean
/// of the per-fold accuracies weighted by fold size (the share of all rows predicted right).
pub fn cross_validated_accuracy(x: ArrayView2<f64>, y: &[bool], fold_of: &[usize], c: f64) -> Result<f64> {
    let folds = fold_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut right = 0usize;
    for f in 0..folds {
        let train: Vec<usize> = (0..x.nrows()).filter(|&i| fold_of[i] != f).collect();
        let test: Vec<usize> = (0..x.nrows()).filter(|&i| fold_of[i] == f).collect();
        if test.is_empty() {
            continue;
        }
        let xt = x.select(Axis(0), &train);
        let scaler = Standardizer::fit(xt.view());
        let yt: Vec<bool> = train.iter().map(|&i| y[i]).collect();
        let model = LogisticRegression::fit(scaler.apply(xt.view()).view(), &yt, c)?;
        let xs = scaler.apply(x.select(Axis(0), &test).view());
        right += test.iter().zip(xs.rows()).filter(|(&i, row)| (model.decision(*row) > 0.0) == y[i]).count();
    }
    Ok(right as f64 / x.nrows() as f64)
}

/// Accuracy of a C2ST: mean over the repeats, their standard deviation, and each repeat's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct C2stAccuracy {
    pub mean: f64,
    pub std: f64,
    pub repeats: Vec<f64>,
    /// Maps per class in each repeat (the smaller set's size).
    pub per_class: usize,
}

/// Folds for `n` rows per class: each class's rows shuffled and dealt round-robin into the folds,
/// so every fold holds ⌊n/k⌋ or ⌈n/k⌉ maps of each class.
fn stratified_folds(n: usize, folds: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut out = vec![0; 2 * n];
    for class in 0..2 {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        for (k, &i) in order.iter().enumerate() {
            out[class * n + i] = k % folds;
        }
    }
    out
}

/// One repeat: `n` random rows of each set, stratified folds, the cross-validated accuracy.
fn one_repeat(
    a: ArrayView2<f64>,
    b: ArrayView2<f64>,
    n: usize,
    options: &C2stOptions,
    rng: &mut ChaCha8Rng,
) -> Result<f64> {
    let mut pick = |rows: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..rows).collect();
        idx.shuffle(rng);
        idx.truncate(n);
        idx
    };
    let (ia, ib) = (pick(a.nrows()), pick(b.nrows()));
    let x = ndarray::concatenate(Axis(0), &[a.select(Axis(0), &ia).view(), b.select(Axis(0), &ib).view()])
        .expect("same columns");
    let y: Vec<bool> = (0..2 * n).map(|i| i >= n).collect();
    let folds = stratified_folds(n, options.folds, rng);
    cross_validated_accuracy(x.view(), &y, &folds, options.c)
}

fn summarize(repeats: Vec<f64>, per_class: usize) -> C2stAccuracy {
    let k = repeats.len() as f64;
    let mean = repeats.iter().sum::<f64>() / k;
    let std = if repeats.len() > 1 {
        (repeats.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt()
    } else {
        0.0
    };
    C2stAccuracy { mean, std, repeats, per_class }
}

/// The random stream of repeat `r` (one per repeat, so adding repeats keeps the earlier ones).
fn repeat_rng(seed: u64, r: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(r as u64);
    rng
}

/// The C2ST of two sets of feature rows (`a`: class 0, e.g. real; `b`: class 1). Columns that are
/// not finite in every row of both sets must be left out first ([`finite_columns`]).
pub fn c2st(a: ArrayView2<f64>, b: ArrayView2<f64>, options: &C2stOptions) -> Result<C2stAccuracy> {
    options.check()?;
    let n = a.nrows().min(b.nrows());
    if n < options.min_per_class() {
        return Err(Error::Invalid(format!(
            "{} folds need at least {} maps per class (got {} and {})",
            options.folds,
            options.min_per_class(),
            a.nrows(),
            b.nrows()
        )));
    }
    if a.ncols() != b.ncols() || a.ncols() == 0 {
        return Err(Error::Invalid(format!(
            "features of {} and {} columns: give both sets the same, at least one",
            a.ncols(),
            b.ncols()
        )));
    }
    let repeats = (0..options.repeats)
        .into_par_iter()
        .map(|r| one_repeat(a, b, n, options, &mut repeat_rng(options.seed, r)))
        .collect::<Result<Vec<f64>>>()?;
    Ok(summarize(repeats, n))
}

/// The floor: the C2ST between two random halves of `a` (a new split in every repeat).
pub fn c2st_halves(a: ArrayView2<f64>, options: &C2stOptions) -> Result<C2stAccuracy> {
    options.check()?;
    let half = a.nrows() / 2;
    if half < options.min_per_class() {
        return Err(Error::Invalid(format!(
            "two halves for {} folds need at least {} real maps (got {})",
            options.folds,
            2 * options.min_per_class(),
            a.nrows()
        )));
    }
    let repeats = (0..options.repeats)
        .into_par_iter()
        .map(|r| {
            let mut rng = repeat_rng(options.seed, r);
            let mut idx: Vec<usize> = (0..a.nrows()).collect();
            idx.shuffle(&mut rng);
            let (h0, h1) = (a.select(Axis(0), &idx[..half]), a.select(Axis(0), &idx[half..2 * half]));
            one_repeat(h0.view(), h1.view(), half, options, &mut rng)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(summarize(repeats, half))
}

/// The columns finite in every row of both sets.
pub fn finite_columns(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Vec<usize> {
    (0..a.ncols()).filter(|&j| a.column(j).iter().chain(b.column(j).iter()).all(|v| v.is_finite())).collect()
}

/// One statistic's features alone in the C2ST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticAccuracy {
    pub statistic: Statistic,
    pub features: usize,
    pub accuracy: Option<C2stAccuracy>,
    /// Why the accuracy is missing.
    pub not_available: Option<String>,
}

/// The battery's C2ST: every statistic's per-map curves together as the features, each
/// statistic alone (which one gives the synthetic maps away), and the floor between two halves
/// of the real maps. A number that cannot be computed is None with the reason beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierTest {
    pub options: C2stOptions,
    /// Features used, and features left out because some map's value is not finite.
    pub features: usize,
    pub features_left_out: usize,
    pub accuracy: Option<C2stAccuracy>,
    pub real_halves: Option<C2stAccuracy>,
    pub per_statistic: Vec<StatisticAccuracy>,
    /// Why `accuracy` or `real_halves` is missing ("not available: …").
    pub not_available: Vec<String>,
}

/// One statistic's per-map values of both sets: (statistic, real rows, synthetic rows).
pub type StatisticRows<'a> = (Statistic, &'a [Vec<f64>], &'a [Vec<f64>]);

fn rows_of(values: &[Vec<f64>], columns: &[usize]) -> Array2<f64> {
    Array2::from_shape_fn((values.len(), columns.len()), |(i, j)| values[i][columns[j]])
}

/// Features of both sets with the columns finite everywhere: (real, synthetic, left out).
fn features(real: &[&[Vec<f64>]], synthetic: &[&[Vec<f64>]]) -> (Array2<f64>, Array2<f64>, usize) {
    let join = |parts: &[&[Vec<f64>]]| -> Vec<Vec<f64>> {
        let n = parts.first().map_or(0, |p| p.len());
        (0..n).map(|i| parts.iter().flat_map(|p| p[i].iter().copied()).collect()).collect()
    };
    let (r, s) = (join(real), join(synthetic));
    let width = r.first().map_or(0, Vec::len);
    let all = |v: &[Vec<f64>]| Array2::from_shape_fn((v.len(), width), |(i, j)| v[i][j]);
    let (ra, sa) = (all(&r), all(&s));
    let keep = finite_columns(ra.view(), sa.view());
    (rows_of(&r, &keep), rows_of(&s, &keep), width - keep.len())
}

impl ClassifierTest {
    /// The test on per-map values `(statistic, real rows, synthetic rows)` of each statistic.
    pub fn of(statistics: &[StatisticRows<'_>], options: &C2stOptions) -> ClassifierTest {
        let real: Vec<&[Vec<f64>]> = statistics.iter().map(|s| s.1).collect();
        let synthetic: Vec<&[Vec<f64>]> = statistics.iter().map(|s| s.2).collect();
        let (r, s, left_out) = features(&real, &synthetic);
        let mut not_available = Vec::new();
        let mut attempt = |what: &str, result: Result<C2stAccuracy>| match result {
            Ok(a) => Some(a),
            Err(e) => {
                not_available.push(format!("{what} not available: {e}"));
                None
            }
        };
        let accuracy = attempt("accuracy", c2st(r.view(), s.view(), options));
        let real_halves = attempt("real-halves floor", c2st_halves(r.view(), options));
        let per_statistic = statistics
            .iter()
            .map(|(statistic, rr, ss)| {
                let (a, b, _) = features(&[rr], &[ss]);
                let (accuracy, not_available) = match c2st(a.view(), b.view(), options) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(format!("not available: {e}"))),
                };
                StatisticAccuracy { statistic: *statistic, features: a.ncols(), accuracy, not_available }
            })
            .collect();
        ClassifierTest {
            options: *options,
            features: r.ncols(),
            features_left_out: left_out,
            accuracy,
            real_halves,
            per_statistic,
            not_available,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian_rows(n: usize, p: usize, shift: f64, seed: u64) -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, p), |(_, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z + if j == 0 { shift } else { 0.0 }
        })
    }

    #[test]
    fn newton_reaches_the_minimum() {
        let x = gaussian_rows(40, 3, 0.0, 1);
        let y: Vec<bool> = (0..40).map(|i| x[[i, 0]] + 0.5 * x[[i, 1]] > 0.2).collect();
        let m = LogisticRegression::fit(x.view(), &y, 1.0).unwrap();
        // The gradient of the objective vanishes at the fitted parameters.
        let mut g = m.weights.clone();
        let mut gb = 0.0;
        for i in 0..40 {
            let s = if y[i] { 1.0 } else { -1.0 };
            let q = sigmoid(-s * m.decision(x.row(i)));
            g.scaled_add(-s * q, &x.row(i));
            gb -= s * q;
        }
        assert!(g.iter().all(|v| v.abs() < 1e-8) && gb.abs() < 1e-8, "{g:?} {gb}");
        assert!(m.weights[0] > 1.0 && m.weights[0] > m.weights[1] && m.weights[1] > 0.0, "{:?}", m.weights);
        // Separable data: the penalty keeps the weights finite.
        let y: Vec<bool> = (0..40).map(|i| x[[i, 0]] > 0.0).collect();
        let m = LogisticRegression::fit(x.view(), &y, 1.0).unwrap();
        assert!(m.weights.iter().all(|w| w.is_finite()) && m.intercept.is_finite());
    }

    #[test]
    fn one_distribution_gives_chance_and_a_shift_gives_itself_away() {
        let opts = C2stOptions::default();
        let a = gaussian_rows(40, 20, 0.0, 2);
        let b = gaussian_rows(40, 20, 0.0, 3);
        let same = c2st(a.view(), b.view(), &opts).unwrap();
        assert!((same.mean - 0.5).abs() < 0.12, "{same:?}");
        assert_eq!(same.repeats.len(), 10);
        assert!(same.std > 0.0);
        let shifted = gaussian_rows(40, 20, 6.0, 3);
        let far = c2st(a.view(), shifted.view(), &opts).unwrap();
        assert!(far.mean > 0.95, "{far:?}");
        // Seeded: the same inputs, the same accuracies; another seed, other folds.
        assert_eq!(c2st(a.view(), b.view(), &opts).unwrap(), same);
        assert_ne!(c2st(a.view(), b.view(), &C2stOptions { seed: 9, ..opts }).unwrap().repeats, same.repeats);
        let floor = c2st_halves(a.view(), &opts).unwrap();
        assert_eq!(floor.per_class, 20);
        assert!((floor.mean - 0.5).abs() < 0.15, "{floor:?}");
    }

    #[test]
    fn unbalanced_sets_are_subsampled_and_small_sets_refused() {
        let opts = C2stOptions::default();
        let a = gaussian_rows(12, 4, 0.0, 4);
        let b = gaussian_rows(30, 4, 0.0, 5);
        assert_eq!(c2st(a.view(), b.view(), &opts).unwrap().per_class, 12);
        let e = c2st(a.slice(ndarray::s![..4, ..]), b.view(), &opts).unwrap_err().to_string();
        assert!(e.contains("5 folds need at least 5 maps per class (got 4 and 30)"), "{e}");
        let e = c2st_halves(a.slice(ndarray::s![..9, ..]), &opts).unwrap_err().to_string();
        assert!(e.contains("at least 10 real maps (got 9)"), "{e}");
        assert!(C2stOptions { folds: 1, ..opts }.check().is_err());
        assert!(C2stOptions { c: 0.0, ..opts }.check().is_err());
    }

    #[test]
    fn finite_columns_drop_any_nan() {
        let a = ndarray::array![[1.0, f64::NAN, 3.0], [1.0, 2.0, 3.0]];
        let b = ndarray::array![[1.0, 2.0, f64::INFINITY], [1.0, 2.0, 3.0]];
        assert_eq!(finite_columns(a.view(), b.view()), vec![0]);
    }
}
