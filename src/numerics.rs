//! Small numerics shared by several stages: percentiles, errors between arrays, angles between
//! vectors.

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
