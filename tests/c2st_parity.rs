//! The classifier two-sample test's logistic regression and cross-validation against
//! scikit-learn (fixtures by tools/make_c2st_fixtures.py): the fitted weights, intercept and
//! decision values of `LogisticRegression(C=1)`, and the accuracy of
//! `StandardScaler + LogisticRegression` under fixed folds.

mod common;

use common::{fixtures, json, num};
use expanse::stats::c2st::{cross_validated_accuracy, LogisticRegression};
use ndarray::Array2;
use serde_json::Value;

fn rows(v: &Value) -> Array2<f64> {
    let r: Vec<Vec<f64>> =
        v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(num).collect()).collect();
    Array2::from_shape_fn((r.len(), r[0].len()), |(i, j)| r[i][j])
}

fn list(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

#[test]
fn logistic_regression_and_cross_validation_match_scikit_learn() {
    for name in ["overlap", "nearly_separable", "wide"] {
        let f = json(fixtures("c2st").join(format!("{name}.json")));
        let x = rows(&f["x"]);
        let y: Vec<bool> = list(&f["y"]).iter().map(|&v| v == 1.0).collect();
        let m = LogisticRegression::fit(x.view(), &y, 1.0).unwrap();
        let scale = list(&f["weights"]).iter().fold(num(&f["intercept"]).abs(), |a, w| a.max(w.abs()));
        for (a, b) in m.weights.iter().zip(list(&f["weights"])) {
            assert!((a - b).abs() <= 1e-6 * scale, "{name}: weight {a} vs scikit-learn {b}");
        }
        assert!((m.intercept - num(&f["intercept"])).abs() <= 1e-6 * scale, "{name}: intercept {}", m.intercept);
        for (row, d) in x.rows().into_iter().zip(list(&f["decision"])) {
            assert!((m.decision(row) - d).abs() <= 1e-6 * d.abs().max(1.0), "{name}: decision {d}");
        }
        let folds: Vec<usize> = list(&f["folds"]).iter().map(|&v| v as usize).collect();
        let acc = cross_validated_accuracy(x.view(), &y, &folds, 1.0).unwrap();
        assert!((acc - num(&f["accuracy"])).abs() < 1e-12, "{name}: accuracy {acc} vs {}", f["accuracy"]);
    }
}
