//! Small numerics shared by several stages: mean and sample standard deviation, percentiles,
//! errors between arrays, angles between vectors, and an L-BFGS minimizer.

use ndarray::{ArrayView, ArrayView1, Dimension};

/// numpy-style percentile (linear interpolation) of sorted values.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let i = pos.floor() as usize;
    let frac = pos - i as f64;
    if i + 1 >= n {
        sorted[n - 1]
    } else {
        sorted[i] + (sorted[i + 1] - sorted[i]) * frac
    }
}

/// Mean of `v` (NaN when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation of `v` (n − 1 in the denominator; NaN for fewer than two values,
/// whose spread is unknown). Callers drop non-finite values first where they must.
pub fn sample_std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Serde of a keyword value of a config (`kind = "empirical"`, `apodize = "tukey:0.3"`) through
/// its `Display` and `FromStr`: the config accepts what the command line accepts, refuses what it
/// refuses with the same message, and writes it back as the user wrote it. For a field:
/// `#[serde(with = "crate::numerics::keyword")]`; [`optional_keyword`] and [`keyword_list`] for
/// `Option<T>` and `Option<Vec<T>>`.
pub mod keyword {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// [`keyword`] for an optional value.
pub mod optional_keyword {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

/// [`keyword`] for an optional list of values.
pub mod keyword_list {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(value: &Option<Vec<T>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(list) => {
                let mut seq = s.serialize_seq(Some(list.len()))?;
                for v in list {
                    seq.serialize_element(&v.to_string())?;
                }
                seq.end()
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Vec<T>>, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        Option::<Vec<String>>::deserialize(d)?
            .map(|list| list.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect())
            .transpose()
    }
}

/// `FromStr` and `Display` for an enum of unit variants named by keywords in configs and on the
/// command line: `keyword_enum!(NormMode, "norm mode", { Free => "free", Match => "match" })`.
/// A variant may take aliases after its name (`Draw => "draw" | "prior"`); `Display` writes the
/// name, and an unknown word is refused with the list of names ("unknown norm mode 'x' (free or
/// match)").
#[macro_export]
macro_rules! keyword_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                match s {
                    $($name $(| $alias)* => Ok($ty::$variant),)+
                    other => {
                        let names: &[&str] = &[$($name),+];
                        let list = match names.split_last() {
                            Some((last, [])) => last.to_string(),
                            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                            None => String::new(),
                        };
                        Err($crate::error::Error::Invalid(format!("unknown {} '{other}' ({list})", $what)))
                    }
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($ty::$variant => $name,)+
                })
            }
        }
    };
}

/// Deserializes a number that JSON may hold as null (serde_json writes NaN and ±∞ as null) as NaN.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Mean squared error between two arrays of the same shape.
pub fn mse<D: Dimension>(a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64
}

/// Peak signal-to-noise ratio (dB) of a mean squared error for a given data range (infinite for
/// equal arrays).
pub fn psnr_of_mse(mse: f64, data_range: f64) -> f64 {
    10.0 * (data_range * data_range / mse).log10()
}

/// Angle between two vectors, degrees (0..180).
pub fn angle_deg(u: ArrayView1<f64>, v: ArrayView1<f64>) -> f64 {
    (u.dot(&v) / (u.dot(&u).sqrt() * v.dot(&v).sqrt())).clamp(-1.0, 1.0).acos().to_degrees()
}

/// Where [`lbfgs`] stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    /// Iterations (accepted steps) and function evaluations.
    pub iterations: usize,
    pub evaluations: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimizes `f` (value and gradient) from `x0` by L-BFGS with `memory` correction pairs and a
/// backtracking (Armijo) line search, for at most `max_iterations` steps. Stops early when the
/// gradient vanishes, when a step no longer lowers the value by a relative 1e-12, or when the line
/// search finds no lower point. Deterministic: the same inputs give the same path.
pub fn lbfgs(
    x0: Vec<f64>,
    max_iterations: usize,
    memory: usize,
    mut f: impl FnMut(&[f64]) -> (f64, Vec<f64>),
) -> Minimum {
    let mut x = x0;
    let (mut value, mut grad) = f(&x);
    let mut evaluations = 1;
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = std::collections::VecDeque::new();
    let mut iterations = 0;
    while iterations < max_iterations {
        let gnorm = dot(&grad, &grad).sqrt();
        if !(gnorm > 0.0) || !value.is_finite() {
            break;
        }
        // Two-loop recursion: d = −H·g.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match pairs.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / gnorm,
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&grad, &direction);
        if !(slope < 0.0) {
            // Not a descent direction (curvature pairs gone stale): restart along −g.
            pairs.clear();
            direction = grad.iter().map(|g| -g / gnorm).collect();
            slope = -gnorm;
        }
        let mut t = 1.0;
        let accepted = loop {
            let trial: Vec<f64> = x.iter().zip(&direction).map(|(xi, di)| xi + t * di).collect();
            let (v, g) = f(&trial);
            evaluations += 1;
            if v.is_finite() && v <= value + 1e-4 * t * slope {
                break Some((trial, v, g));
            }
            t *= 0.5;
            if t < 1e-12 {
                break None;
            }
        };
        let Some((trial, v, g)) = accepted else { break };
        let s: Vec<f64> = trial.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE).sqrt() * dot(&s, &s).sqrt() {
            if pairs.len() == memory {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        let decrease = value - v;
        x = trial;
        grad = g;
        value = v;
        iterations += 1;
        if decrease <= 1e-12 * value.abs().max(f64::MIN_POSITIVE) {
            break;
        }
    }
    Minimum { x, value, iterations, evaluations }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!((percentile_sorted(&v, 10.0) - 1.4).abs() < 1e-12);
        assert!((percentile_sorted(&v, 50.0) - 3.0).abs() < 1e-12);
        assert!((percentile_sorted(&v, 95.0) - 8.8).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[7.0], 30.0), 7.0);
    }

    #[test]
    fn lbfgs_finds_the_minimum_of_a_badly_scaled_quadratic_and_rosenbrock() {
        // f = Σ c_i (x_i − 1)², condition number 1e4.
        let c: Vec<f64> = (0..20).map(|i| 10f64.powf(4.0 * i as f64 / 19.0)).collect();
        let m = lbfgs(vec![0.0; 20], 500, 10, |x| {
            let v = x.iter().zip(&c).map(|(xi, ci)| ci * (xi - 1.0).powi(2)).sum();
            (v, x.iter().zip(&c).map(|(xi, ci)| 2.0 * ci * (xi - 1.0)).collect())
        });
        assert!(m.x.iter().all(|v| (v - 1.0).abs() < 1e-5), "{m:?}");
        assert!(m.evaluations >= m.iterations);
        let rosen = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            (v, vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)])
        };
        let m = lbfgs(vec![-1.2, 1.0], 1000, 5, rosen);
        assert!((m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] - 1.0).abs() < 1e-5, "{m:?}");
        // A budget of steps is kept.
        assert_eq!(lbfgs(vec![-1.2, 1.0], 3, 5, rosen).iterations, 3);
    }

    #[test]
    fn errors_and_angles() {
        let a = array![[0.0, 1.0], [2.0, 3.0]];
        let b = array![[0.0, 1.0], [2.0, 5.0]];
        assert_eq!(mse(a.view(), b.view()), 1.0);
        assert!((psnr_of_mse(1.0, 2.0) - 10.0 * 4f64.log10()).abs() < 1e-12);
        assert_eq!(psnr_of_mse(0.0, 2.0), f64::INFINITY);
        assert!((angle_deg(array![1.0, 0.0].view(), array![0.0, 2.0].view()) - 90.0).abs() < 1e-12);
        assert!((angle_deg(array![1.0, 1.0].view(), array![-3.0, -3.0].view()) - 180.0).abs() < 1e-9);
    }
}
