//! Invertible intensity transforms into the model range [-1, 1], fitted over a whole domain.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::number;

/// A fitted transform. `lo`/`hi` are the stretched values sent to -1 and +1:
/// `y = 2 (s(x) - lo) / (hi - lo) - 1` with `s` the identity, `log10(x + offset)` or
/// `asinh(x / softening)`. Values outside `[lo, hi]` map outside [-1, 1] (nothing is clipped, so
/// the transform stays invertible).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transform {
    Linear { lo: f64, hi: f64 },
    Log10 { offset: f64, lo: f64, hi: f64 },
    Asinh { softening: f64, lo: f64, hi: f64 },
}

/// How the stretched range `[lo, hi]` is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RangeSpec {
    /// Minimum and maximum of the domain.
    MinMax,
    /// Percentiles (0–100) of the domain, numpy's linear interpolation.
    Percentile { low: f64, high: f64 },
}

/// Which transform family to fit, and its fixed parameters (None = fit from the data).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransformSpec {
    Linear { range: RangeSpec },
    Log10 { range: RangeSpec, offset: Option<f64> },
    Asinh { range: RangeSpec, softening: Option<f64> },
}

impl TransformSpec {
    /// Parses `linear`, `log10`, `asinh` with a range (`minmax` or `LOW,HIGH` percentiles).
    pub fn parse(kind: &str, range: RangeSpec, offset: Option<f64>, softening: Option<f64>) -> Result<Self> {
        if let Some(o) = offset.filter(|o| !o.is_finite()) {
            return Err(Error::setting("offset", format!("the log10 offset must be a finite number, got {o}")));
        }
        if let Some(s) = softening.filter(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(Error::setting("softening", format!("the asinh softening must be a positive number, got {s}")));
        }
        match kind {
            "linear" => Ok(TransformSpec::Linear { range }),
            "log10" => Ok(TransformSpec::Log10 { range, offset }),
            "asinh" => Ok(TransformSpec::Asinh { range, softening }),
            "log" | "ln" => Err(Error::setting(
                "transform",
                format!("'{kind}' is ambiguous: write log10 (the normalization is the same for any base)"),
            )),
            other => {
                Err(Error::setting("transform", format!("unknown transform '{other}' (choose linear, log10 or asinh)")))
            }
        }
    }
}

impl std::str::FromStr for RangeSpec {
    type Err = Error;
    /// `minmax` or `percentile:LOW,HIGH` (e.g. `percentile:0.5,99.5`).
    fn from_str(s: &str) -> Result<Self> {
        if s == "minmax" {
            return Ok(RangeSpec::MinMax);
        }
        let body = s.strip_prefix("percentile:").unwrap_or(s);
        let parts: Vec<f64> =
            body.split(',')
                .map(|p| p.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| Error::Invalid(format!("range '{s}': expected 'minmax' or 'percentile:LOW,HIGH'")))?;
        match parts[..] {
            [low, high] if (0.0..=100.0).contains(&low) && (0.0..=100.0).contains(&high) && low < high => {
                Ok(RangeSpec::Percentile { low, high })
            }
            _ => Err(Error::Invalid(format!("range '{s}': percentiles must satisfy 0 <= LOW < HIGH <= 100"))),
        }
    }
}

fn sorted_finite(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v
}

fn range_of(sorted: &[f64], range: RangeSpec) -> (f64, f64) {
    match range {
        RangeSpec::MinMax => (sorted[0], sorted[sorted.len() - 1]),
        RangeSpec::Percentile { low, high } => {
            (crate::numerics::percentile_sorted(sorted, low), crate::numerics::percentile_sorted(sorted, high))
        }
    }
}

impl Transform {
    /// Fits the transform over all finite values of a domain.
    pub fn fit(spec: &TransformSpec, values: impl Iterator<Item = f32>) -> Result<Transform> {
        let sorted = sorted_finite(values.map(f64::from));
        if sorted.is_empty() {
            return Err(Error::Invalid("no finite pixel values to fit a transform".into()));
        }
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        if min == max {
            return Err(Error::Invalid(format!(
                "all pixel values equal {min}: a constant domain cannot be normalized"
            )));
        }
        let t = match *spec {
            TransformSpec::Linear { range } => {
                let (lo, hi) = range_of(&sorted, range);
                Transform::Linear { lo, hi }
            }
            TransformSpec::Log10 { range, offset } => {
                let offset = match offset {
                    Some(o) => {
                        if min + o <= 0.0 {
                            return Err(Error::Invalid(format!(
                                "log10 with offset {o}: the smallest value {min} gives log10 of {} (not positive); \
                                 raise --offset above {} or use asinh",
                                min + o,
                                -min
                            )));
                        }
                        o
                    }
                    // Auto: no offset for positive data; otherwise lift the minimum to 0.1 % of the range.
                    None if min > 0.0 => 0.0,
                    None => -min + 1e-3 * (max - min),
                };
                let logs: Vec<f64> = sorted.iter().map(|x| (x + offset).log10()).collect();
                let (lo, hi) = range_of(&logs, range);
                Transform::Log10 { offset, lo, hi }
            }
            TransformSpec::Asinh { range, softening } => {
                let softening = match softening {
                    Some(s) if s > 0.0 && s.is_finite() => s,
                    Some(s) => return Err(Error::Invalid(format!("asinh softening must be positive, got {s}"))),
                    None => robust_scale(&sorted),
                };
                let st: Vec<f64> = sorted.iter().map(|x| (x / softening).asinh()).collect();
                let (lo, hi) = range_of(&st, range);
                Transform::Asinh { softening, lo, hi }
            }
        };
        let (lo, hi) = t.bounds();
        if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
            return Err(Error::Invalid(format!(
                "the chosen range gives an empty interval [{}, {}]; widen the percentiles",
                number(lo),
                number(hi)
            )));
        }
        Ok(t)
    }

    fn bounds(&self) -> (f64, f64) {
        match *self {
            Transform::Linear { lo, hi } | Transform::Log10 { lo, hi, .. } | Transform::Asinh { lo, hi, .. } => {
                (lo, hi)
            }
        }
    }

    /// Physical value → model value (f64). NaN stays NaN; log10 of a non-positive value is NaN.
    pub fn forward(&self, x: f64) -> f64 {
        let (lo, hi) = self.bounds();
        let s = match *self {
            Transform::Linear { .. } => x,
            Transform::Log10 { offset, .. } => {
                let v = x + offset;
                if v > 0.0 {
                    v.log10()
                } else {
                    f64::NAN
                }
            }
            Transform::Asinh { softening, .. } => (x / softening).asinh(),
        };
        let c = 0.5 * (lo + hi);
        let h = 0.5 * (hi - lo);
        (s - c) / h
    }

    /// Model value → physical value (f64).
    pub fn inverse(&self, y: f64) -> f64 {
        let (lo, hi) = self.bounds();
        let s = 0.5 * (lo + hi) + 0.5 * (hi - lo) * y;
        match *self {
            Transform::Linear { .. } => s,
            Transform::Log10 { offset, .. } => 10f64.powf(s) - offset,
            Transform::Asinh { softening, .. } => s.sinh() * softening,
        }
    }

    /// A one-line description for logs and FITS HISTORY.
    pub fn describe(&self) -> String {
        match *self {
            Transform::Linear { lo, hi } => {
                format!("linear: y = 2 (x - lo) / (hi - lo) - 1 with lo = {}, hi = {}", number(lo), number(hi))
            }
            Transform::Log10 { offset, lo, hi } => format!(
                "log10: y = 2 (log10(x + offset) - lo) / (hi - lo) - 1 with offset = {}, lo = {}, hi = {}",
                number(offset),
                number(lo),
                number(hi)
            ),
            Transform::Asinh { softening, lo, hi } => format!(
                "asinh: y = 2 (asinh(x / softening) - lo) / (hi - lo) - 1 with softening = {}, lo = {}, hi = {}",
                number(softening),
                number(lo),
                number(hi)
            ),
        }
    }
}

/// 1.4826 × median absolute deviation (a robust noise scale); the standard deviation when the
/// MAD is zero.
fn robust_scale(sorted: &[f64]) -> f64 {
    let med = crate::numerics::percentile_sorted(sorted, 50.0);
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let mad = 1.4826 * crate::numerics::percentile_sorted(&dev, 50.0);
    if mad > 0.0 {
        return mad;
    }
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    (sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Median of the finite values (the documented fill for blank pixels).
pub fn median(values: impl Iterator<Item = f32>) -> Option<f64> {
    let sorted = sorted_finite(values.map(f64::from));
    (!sorted.is_empty()).then(|| crate::numerics::percentile_sorted(&sorted, 50.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<f32> {
        // Eight decades of positive values, like column densities.
        (0..2000)
            .map(|i| 10f32.powf(18.0 + 8.0 * i as f32 / 1999.0) * (1.0 + 0.3 * ((i * 7919) % 13) as f32 / 13.0))
            .collect()
    }

    fn assert_round_trip(t: &Transform, xs: &[f32]) {
        for &x in xs {
            let x = x as f64;
            let back = t.inverse(t.forward(x));
            let scale = match t {
                Transform::Linear { lo, hi } => 1e-12 * (hi - lo).abs(),
                _ => 0.0,
            };
            assert!((back - x).abs() <= 1e-6 * x.abs() + scale, "{t:?}: {x} -> {back}");
        }
    }

    #[test]
    fn non_finite_offsets_and_bad_softenings_are_refused() {
        assert!(TransformSpec::parse("log10", RangeSpec::MinMax, Some(f64::NAN), None).is_err());
        assert!(TransformSpec::parse("asinh", RangeSpec::MinMax, None, Some(-1.0)).is_err());
        assert!(TransformSpec::parse("asinh", RangeSpec::MinMax, None, Some(f64::INFINITY)).is_err());
        assert!(TransformSpec::parse("log10", RangeSpec::MinMax, Some(-3.0), None).is_ok());
    }

    #[test]
    fn every_transform_round_trips_to_1e6_relative() {
        let xs = samples();
        let signed: Vec<f32> =
            xs.iter().enumerate().map(|(i, &x)| if i % 2 == 0 { -x * 1e-18 } else { x * 1e-18 }).collect();
        let specs = [
            (TransformSpec::Linear { range: RangeSpec::MinMax }, &xs),
            (TransformSpec::Linear { range: RangeSpec::Percentile { low: 1.0, high: 99.0 } }, &signed),
            (TransformSpec::Log10 { range: RangeSpec::MinMax, offset: None }, &xs),
            (TransformSpec::Log10 { range: RangeSpec::Percentile { low: 0.5, high: 99.5 }, offset: None }, &signed),
            (TransformSpec::Asinh { range: RangeSpec::MinMax, softening: None }, &signed),
            (TransformSpec::Asinh { range: RangeSpec::MinMax, softening: Some(1e20) }, &xs),
        ];
        for (spec, data) in specs {
            let t = Transform::fit(&spec, data.iter().copied()).unwrap();
            assert_round_trip(&t, data);
        }
    }

    #[test]
    fn minmax_maps_the_domain_onto_minus_one_one() {
        let xs = samples();
        for spec in [
            TransformSpec::Linear { range: RangeSpec::MinMax },
            TransformSpec::Log10 { range: RangeSpec::MinMax, offset: None },
            TransformSpec::Asinh { range: RangeSpec::MinMax, softening: None },
        ] {
            let t = Transform::fit(&spec, xs.iter().copied()).unwrap();
            let ys: Vec<f64> = xs.iter().map(|&x| t.forward(x as f64)).collect();
            let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            assert!((lo + 1.0).abs() < 1e-9 && (hi - 1.0).abs() < 1e-9, "{spec:?}: [{lo}, {hi}]");
        }
    }

    #[test]
    fn constant_and_empty_domains_are_errors() {
        let c = vec![3.0f32; 10];
        assert!(Transform::fit(&TransformSpec::Linear { range: RangeSpec::MinMax }, c.into_iter()).is_err());
        let n = vec![f32::NAN; 10];
        assert!(Transform::fit(&TransformSpec::Linear { range: RangeSpec::MinMax }, n.into_iter()).is_err());
    }

    #[test]
    fn log10_rejects_an_offset_that_leaves_non_positive_values() {
        let v = vec![-1.0f32, 0.0, 5.0];
        let e = Transform::fit(&TransformSpec::Log10 { range: RangeSpec::MinMax, offset: Some(0.5) }, v.into_iter());
        assert!(e.unwrap_err().to_string().contains("offset"));
    }

    #[test]
    fn transform_serializes_and_reads_back() {
        let t = Transform::Log10 { offset: 0.25, lo: 18.0, hi: 23.5 };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"kind":"log10","offset":0.25,"lo":18.0,"hi":23.5}"#);
        assert_eq!(serde_json::from_str::<Transform>(&s).unwrap(), t);
    }

    #[test]
    fn range_spec_parses() {
        assert_eq!("minmax".parse::<RangeSpec>().unwrap(), RangeSpec::MinMax);
        assert_eq!("percentile:1,99".parse::<RangeSpec>().unwrap(), RangeSpec::Percentile { low: 1.0, high: 99.0 });
        assert!("percentile:99,1".parse::<RangeSpec>().is_err());
        assert!("bogus".parse::<RangeSpec>().is_err());
    }
}
