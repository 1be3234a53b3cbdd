//! `expanse refine`: synthetic maps brought to real maps' wavelet moments, with the record in
//! their provenance; bad inputs give one error and no output.

mod common;

use common::{expanse, ok};

fn log10_std(path: &std::path::Path) -> f64 {
    let maps = expanse::io::read_maps(path, &expanse::io::Selection::default()).unwrap();
    let per_map: Vec<f64> = maps
        .iter()
        .map(|m| {
            let v: Vec<f64> = m.data.iter().map(|&x| (x as f64).log10()).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        })
        .collect();
    per_map.iter().sum::<f64>() / per_map.len() as f64
}

#[test]
fn refine_brings_low_contrast_maps_to_the_real_contrast() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&["simulate", "--out", &path("real.fits"), "--count", "12", "--size", "32", "--seed", "1"]);
    ok(&["simulate", "--out", &path("syn.fits"), "--count", "5", "--size", "32", "--seed", "2", "--sigma-ln", "0.3"]);
    let text = ok(&[
        "refine",
        "--real",
        &path("real.fits"),
        "--synthetic",
        &path("syn.fits"),
        "--out",
        &path("refined.h5"),
        "--iterations",
        "40",
    ]);
    assert!(text.contains("refined 5 map(s) on"), "{text}");
    let (real, before, after) = (
        log10_std(&dir.path().join("real.fits")),
        log10_std(&dir.path().join("syn.fits")),
        log10_std(&dir.path().join("refined.h5")),
    );
    assert!((after - real).abs() < 0.25 * (before - real).abs(), "log10 contrast: real {real}, {before} -> {after}");
    let prov = expanse::io::read_provenance(&dir.path().join("refined.h5")).unwrap().unwrap();
    assert_eq!(prov.command, "refine");
    assert_eq!(prov.units.as_deref(), Some("cm-2"));
    let r = &prov.records["refinement"];
    assert_eq!((r["options"]["iterations"].as_u64(), r["scales"].as_u64()), (Some(40), Some(3)));
    let (b, a): (f64, f64) = (r["loss_before"][0].as_f64().unwrap(), r["loss_after"][0].as_f64().unwrap());
    assert!(a < 0.2 * b, "loss {b} -> {a}");
    assert!(prov.records.contains_key("refined_from"));
}

#[test]
fn refine_refuses_bad_input_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&["simulate", "--out", &path("real.fits"), "--count", "6", "--size", "32", "--seed", "1"]);
    ok(&["simulate", "--out", &path("big.fits"), "--count", "2", "--size", "64", "--seed", "2"]);
    let mut nan = ndarray::Array3::<f32>::from_elem((2, 32, 32), 1e21);
    nan[[1, 3, 3]] = f32::NAN;
    ndarray_npy::write_npy(dir.path().join("nan.npy"), &nan).unwrap();
    for (synthetic, expected) in [
        (path("big.fits"), "refine maps of one size"),
        (path("missing.fits"), "missing.fits"),
        (path("nan.npy"), "nan.npy: holds blank (NaN) pixels"),
    ] {
        let out =
            expanse(&["refine", "--real", &path("real.fits"), "--synthetic", &synthetic, "--out", &path("out.fits")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{synthetic}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!dir.path().join("out.fits").exists());
    }
    let out = expanse(&[
        "refine",
        "--real",
        &path("real.fits"),
        "--synthetic",
        &path("real.fits"),
        "--out",
        &path("o.fits"),
        "--angles",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--angles: must be at least 1"));
}
