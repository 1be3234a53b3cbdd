//! `power-spectrum` and `validate` on the sample maps: outputs follow the documented format, a
//! second simulation of the same clouds is statistically close, and copies are caught.

mod common;
use common::{expanse, fixtures, json, ok, sample};

#[test]
fn power_spectrum_writes_the_documented_csv_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixtures("stats").join("grf_k3_64.npy");
    let csv = dir.path().join("ps.csv");
    let json = dir.path().join("ps.json");
    ok(&[
        "power-spectrum",
        fixture.to_str().unwrap(),
        "--out",
        csv.to_str().unwrap(),
        "--summary",
        json.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("k,power,power_std,count"));
    assert_eq!(lines.count(), 46);
    let s = common::json(&json);
    // The fixture's TurbuStat slope (float32 storage of the map moves it by < 1e-4).
    assert!((s["slope"].as_f64().unwrap() + 2.893268972368598).abs() < 1e-4, "{s}");
    for key in ["slope_err", "low_cut", "high_cut", "nbins"] {
        assert!(s[key].is_number(), "{key}");
    }
    let e =
        expanse(&["power-spectrum", fixture.to_str().unwrap(), "--out", csv.to_str().unwrap(), "--apodize", "gauss"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("tukey:ALPHA"));
    // A bad fit range names the flag and what is wrong with it; nothing is written.
    let bad = dir.path().join("bad.csv");
    for (range, cause) in
        [("0.3:0.1", "need 0 <= LOW < HIGH"), ("a:0.3", "'a' is not a number"), ("0.1", "expected LOW:HIGH")]
    {
        let e = expanse(&[
            "power-spectrum",
            fixture.to_str().unwrap(),
            "--out",
            bad.to_str().unwrap(),
            "--fit-range",
            range,
        ]);
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && msg.contains("--fit-range") && msg.contains(cause), "{range}: {msg}");
        assert!(!bad.exists());
    }
}

#[test]
fn validate_accepts_a_twin_simulation_and_flags_copies() {
    let dir = tempfile::tempdir().unwrap();
    let twin = dir.path().join("twin.fits");
    ok(&["simulate", "--out", twin.to_str().unwrap(), "--count", "16", "--size", "64", "--seed", "77"]);
    let out = dir.path().join("report");
    let text = ok(&[
        "validate",
        "--real",
        sample("clouds_64.fits").to_str().unwrap(),
        "--synthetic",
        twin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("0 of 16 synthetic map(s) flagged"), "{text}");
    let r = json(out.join("report.json"));
    assert!(r["spectrum_distance"].as_f64().unwrap() < 3.0, "same generator, same slope: {}", r["spectrum_distance"]);
    assert_eq!(r["scale"], "log10");
    assert!(r["pdf"]["hellinger"].as_f64().unwrap() < 0.2);
    for f in ["report.md", "power_spectra.png", "power_spectra.svg", "pdfs.png", "maps.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The real maps against themselves: every map is a copy.
    let out2 = dir.path().join("copies");
    let text = ok(&[
        "validate",
        "--real",
        sample("clouds_64.fits").to_str().unwrap(),
        "--synthetic",
        sample("clouds_64.fits").to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(text.contains("32 of 32 synthetic map(s) flagged"), "{text}");
    // Maps of another size are refused.
    let e = expanse(&[
        "validate",
        "--real",
        sample("clouds_64.fits").to_str().unwrap(),
        "--synthetic",
        sample("clouds_256.fits").to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("maps of one size"));
    assert!(!dir.path().join("x").join("report.json").exists());
}

#[test]
fn statistics_commands_choose_the_hdf5_dataset_and_errors_name_flags_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = fixtures("io").join("hdf5_sim.h5");
    let csv = dir.path().join("ps.csv");
    let e = expanse(&["power-spectrum", file.to_str().unwrap(), "--out", csv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert_eq!(e.status.code(), Some(1), "{err}");
    assert!(err.contains("choose one with --dataset") && !csv.exists(), "{err}");
    let out = ok(&[
        "power-spectrum",
        file.to_str().unwrap(),
        "--dataset",
        "sim/snap_010/metals",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(out.contains("(3 map(s)"), "{out}");
    let report = dir.path().join("val");
    let e = expanse(&[
        "validate",
        "--real",
        file.to_str().unwrap(),
        "--synthetic",
        file.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("--dataset") && !report.exists());
    ok(&[
        "validate",
        "--real",
        file.to_str().unwrap(),
        "--synthetic",
        file.to_str().unwrap(),
        "--dataset",
        "/sim/snap_010/metals",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(report.join("report.json").exists());
}

#[test]
fn large_values_print_in_scientific_notation() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ps.csv");
    ok(&["power-spectrum", sample("clouds_64.fits").to_str().unwrap(), "--out", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    for field in text.lines().skip(1).flat_map(|l| l.split(',')) {
        assert!(field.len() <= 24, "{field}");
        assert!(field.parse::<f64>().is_ok(), "{field}");
    }
    assert!(text.lines().nth(1).unwrap().split(',').nth(1).unwrap().contains('e'), "{text}");
    let flat = dir.path().join("flat.npy");
    ndarray_npy::write_npy(&flat, &ndarray::Array3::<f32>::from_elem((2, 8, 8), 1e21)).unwrap();
    let e = expanse(&["ingest", flat.to_str().unwrap(), "--out", dir.path().join("s.h5").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains("every pixel is 1e21"), "{err}");
}

#[test]
fn validate_leaves_blank_pixels_of_the_real_maps_out() {
    // Real maps with blank (NaN) pixels, as an ingested survey has: the report is written, and
    // every distance is over the pixels both maps have.
    let dir = tempfile::tempdir().unwrap();
    let maps = expanse::io::read_maps(&sample("clouds_64.fits"), &Default::default()).unwrap();
    let stack = |from: usize, blank: bool| -> ndarray::Array3<f32> {
        let mut a = ndarray::Array3::<f32>::zeros((8, 64, 64));
        for i in 0..8 {
            a.index_axis_mut(ndarray::Axis(0), i).assign(&maps[from + i].data);
        }
        if blank {
            a[[0, 10, 10]] = f32::NAN;
            a.slice_mut(ndarray::s![1, 20..22, 30..32]).fill(f32::NAN);
        }
        a
    };
    let (real, synthetic) = (dir.path().join("real.npy"), dir.path().join("synthetic.npy"));
    ndarray_npy::write_npy(&real, &stack(0, true)).unwrap();
    ndarray_npy::write_npy(&synthetic, &stack(8, false)).unwrap();
    let out = dir.path().join("report");
    ok(&[
        "validate",
        "--real",
        real.to_str().unwrap(),
        "--synthetic",
        synthetic.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = json(out.join("report.json"));
    let m = &r["memorization"];
    assert!(m["ratio"].as_f64().unwrap().is_finite(), "{m}");
    assert!(m["real_nn"].as_array().unwrap().iter().all(|d| d.as_f64().is_some_and(f64::is_finite)), "{m}");
}
