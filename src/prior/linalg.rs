//! A small symmetric eigensolver (cyclic Jacobi) for the N × N Gram matrices of few-shot latents.

use ndarray::{Array1, Array2};

/// Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix.
pub fn symmetric_eigen(a: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut m = a.clone();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[[i, j]].powi(2))
            .sum();
        let scale: f64 = m.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[[p, q]];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[[q, q]] - m[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[[k, p]], m[[k, q]]);
                    m[[k, p]] = c * mkp - s * mkq;
                    m[[k, q]] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[[p, k]], m[[q, k]]);
                    m[[p, k]] = c * mpk - s * mqk;
                    m[[q, k]] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[[j, j]].partial_cmp(&m[[i, i]]).expect("finite"));
    let values = Array1::from_iter(order.iter().map(|&i| m[[i, i]]));
    let mut vectors = Array2::<f64>::zeros((n, n));
    for (c, &i) in order.iter().enumerate() {
        vectors.column_mut(c).assign(&v.column(i));
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn jacobi_diagonalizes_a_symmetric_matrix() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (vals, vecs) = symmetric_eigen(&a);
        for k in 0..3 {
            let v = vecs.column(k);
            let av = a.dot(&v);
            for i in 0..3 {
                assert!((av[i] - vals[k] * v[i]).abs() < 1e-10);
            }
        }
        assert!(vals[0] >= vals[1] && vals[1] >= vals[2]);
        assert!((vals.sum() - 8.0).abs() < 1e-10);
    }
}
