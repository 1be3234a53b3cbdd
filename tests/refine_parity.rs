//! The wavelet moments, the refinement loss and its hand-derived gradient against PyTorch's
//! autograd on the same definitions (fixtures by tools/make_refine_fixtures.py).

mod common;

use common::{fixtures, json, npy_map, num};
use expanse::stats::wavelet_moments::WaveletMoments;
use serde_json::Value;

fn list(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

#[test]
fn moments_loss_and_gradient_match_pytorch() {
    let dir = fixtures("refine");
    for name in ["noise_20x24", "smooth_32", "lines_32", "noise_20x24_increments", "lines_32_increments"] {
        let f = json(dir.join(format!("{name}.json")));
        let map = npy_map(dir.join(format!("{name}_map.npy")));
        let expected_gradient = npy_map(dir.join(format!("{name}_gradient.npy")));
        let (ny, nx) = map.dim();
        let increments = f.get("increments").and_then(Value::as_bool).unwrap_or(false);
        let wm = WaveletMoments::new(ny, nx, num(&f["J"]) as usize, num(&f["L"]) as usize)
            .unwrap()
            .with_increments(increments);
        let moments = wm.compute(map.view()).unwrap();
        let expected = list(&f["moments"]);
        assert_eq!(moments.len(), expected.len(), "{name}: number of moments");
        for (k, (a, b)) in moments.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-3), "{name}: moment {k} ({}): {a} vs {b}", wm.labels()[k]);
        }
        let (loss, gradient) = wm.loss_and_gradient(map.view(), &list(&f["target"]), &list(&f["weights"])).unwrap();
        let expected_loss = num(&f["loss"]);
        assert!((loss - expected_loss).abs() <= 1e-9 * expected_loss, "{name}: loss {loss} vs {expected_loss}");
        let scale = expected_gradient.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = gradient.iter().zip(expected_gradient.iter()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-8 * scale, "{name}: gradient differs by {worst} (largest entry {scale})");
    }
}
