"""Fixtures for expanse's classifier two-sample test (src/stats/c2st.rs, tests/c2st_parity.rs).

scikit-learn is the reference: for three small data sets (overlapping classes, nearly separable
classes, more features than rows) it writes the rows, the labels and

  * `LogisticRegression(C=1.0)` fitted to all rows (lbfgs to a tight tolerance): the weights,
    the intercept and the decision values;
  * `cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=1.0)), X, y,
    cv=PredefinedSplit(folds))` with fixed folds: the per-fold accuracies and their size-weighted
    mean.

Run from the repository (a venv with tools/requirements-c2st.txt):

    python tools/make_c2st_fixtures.py [--out tests/fixtures/c2st] [--check]
"""

import argparse
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixturelib import check_reproducible, write_json  # noqa: E402


def dataset(name, rng):
    if name == "overlap":
        n, p = 60, 6
        x = rng.standard_normal((n, p)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0]) + 0.3
        y = (x[:, 0] + 0.4 * x[:, 1] + rng.standard_normal(n) > 0.3).astype(int)
    elif name == "nearly_separable":
        n, p = 40, 4
        y = np.repeat([0, 1], n // 2)
        x = rng.standard_normal((n, p)) + 2.5 * y[:, None] * np.array([1.0, 0.5, 0.0, 0.0])
    elif name == "wide":
        n, p = 30, 80
        y = np.tile([0, 1], n // 2)
        x = rng.standard_normal((n, p)) * 5.0 + 0.8 * y[:, None]
    else:
        raise ValueError(name)
    folds = np.concatenate([rng.permutation(np.arange(len(y)) % 5)])
    return x, y, folds


def build(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    for name in ["overlap", "nearly_separable", "wide"]:
        x, y, folds = dataset(name, rng)
        lr = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(x, y)
        pipe = make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-12, max_iter=1000)
        )
        scores = cross_val_score(pipe, x, y, cv=PredefinedSplit(folds), scoring="accuracy")
        sizes = np.array([(folds == f).sum() for f in range(folds.max() + 1)])
        write_json(
            os.path.join(out, f"{name}.json"),
            {
                "reference": "scikit-learn LogisticRegression(C=1.0, solver=newton-cholesky, tol=1e-12), "
                "StandardScaler, PredefinedSplit",
                "x": x.tolist(),
                "y": y.tolist(),
                "folds": folds.tolist(),
                "weights": lr.coef_[0].tolist(),
                "intercept": float(lr.intercept_[0]),
                "decision": lr.decision_function(x).tolist(),
                "fold_accuracies": scores.tolist(),
                "accuracy": float((scores * sizes).sum() / sizes.sum()),
            },
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/c2st")
    ap.add_argument("--check", action="store_true", help="build twice and compare every file")
    a = ap.parse_args()
    if a.check:
        return check_reproducible(build)
    build(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
