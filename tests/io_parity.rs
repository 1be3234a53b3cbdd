//! Parity with astropy / h5py / numpy: every case in tests/fixtures/io/manifest.json (written by
//! tools/make_io_fixtures.py) is read with expanse and compared with what the reference library
//! returned for the same file.

mod common;

use common::{fixtures, manifest, npy, usize_of};
use expanse::io::{self, HduSelector, Selection};
use expanse::prep::{self, PrepSpec};
use ndarray::{Array3, Axis};
use serde_json::Value;

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "io";

/// The cases of the fixtures' manifest.
fn cases() -> Vec<Value> {
    manifest(&fixtures(DIR)).as_array().expect("manifest.json holds a list of cases").clone()
}

fn selection(case: &Value) -> Selection {
    let mut sel = Selection::default();
    if let Some(s) = case["select"].as_object() {
        if let Some(h) = s.get("hdu") {
            sel.hdu = Some(match h {
                Value::Number(_) => HduSelector::Index(usize_of(h)),
                Value::String(name) => HduSelector::Name(name.clone()),
                _ => panic!("bad hdu selector"),
            });
        }
        if let Some(d) = s.get("dataset") {
            sel.dataset = Some(d.as_str().unwrap().to_string());
        }
    }
    sel
}

/// Two float32 values agree when equal, both NaN, or within 2 ulp (astropy scales 8/16-bit
/// integers in float32 arithmetic, cfitsio in float64).
fn same(ours: f32, theirs: f64) -> bool {
    let t = theirs as f32;
    if ours.is_nan() || t.is_nan() {
        return ours.is_nan() && t.is_nan();
    }
    ours == t || (ours - t).abs() <= 2.0 * f32::EPSILON * t.abs()
}

fn expected(case: &Value) -> Array3<f64> {
    npy(fixtures(DIR).join(case["expected"].as_str().unwrap()))
}

#[test]
fn every_good_case_matches_the_reference_reader() {
    let mut checked = 0;
    for case in cases() {
        let name = case["case"].as_str().unwrap();
        let err = case["error"].as_str();
        if !(err.is_none() || err == Some("constant")) {
            continue;
        }
        let path = fixtures(DIR).join(case["file"].as_str().unwrap());
        let maps = io::read_maps(&path, &selection(&case)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = expected(&case);
        assert_eq!(maps.len(), usize_of(&case["n_maps"]), "{name}: map count");
        assert_eq!(maps.len(), want.len_of(Axis(0)), "{name}");
        for (k, (m, w)) in maps.iter().zip(want.axis_iter(Axis(0))).enumerate() {
            assert_eq!(m.data.shape(), w.shape(), "{name}: shape of map {k}");
            for ((idx, &o), &t) in m.data.indexed_iter().zip(w.iter()) {
                assert!(same(o, t), "{name}: map {k} pixel {idx:?}: expanse {o}, reference {t}");
            }
        }
        let units = case["units"].as_str().map(str::to_string);
        assert_eq!(maps[0].source.units, units, "{name}: units");
        for (key, val) in case["cards"].as_object().unwrap() {
            let got = maps[0].source.card(key).unwrap_or_else(|| panic!("{name}: card {key} missing"));
            match val {
                Value::String(s) => assert_eq!(&got, s, "{name}: card {key}"),
                Value::Number(n) => {
                    let g: f64 = got.parse().unwrap_or_else(|_| panic!("{name}: card {key} = {got}"));
                    assert!((g - n.as_f64().unwrap()).abs() <= 1e-12 * g.abs().max(1.0), "{name}: card {key}");
                }
                Value::Bool(b) => assert_eq!(got, if *b { "T" } else { "F" }, "{name}: card {key}"),
                _ => {}
            }
        }
        for (key, val) in case["attrs"].as_object().unwrap() {
            let got = maps[0].source.attrs.get(key).unwrap_or_else(|| panic!("{name}: attribute {key} missing"));
            assert_json_eq(got, val, &format!("{name}: attribute {key}"));
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} parity cases ran");
}

fn assert_json_eq(got: &Value, want: &Value, what: &str) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-12, "{what}: {a} vs {b}")
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(b) {
                assert_json_eq(x, y, what);
            }
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn every_bad_case_fails_with_a_message_naming_file_and_cause() {
    let mut checked = 0;
    for case in cases() {
        let name = case["case"].as_str().unwrap();
        let Some(kind) = case["error"].as_str() else { continue };
        let file = case["file"].as_str().unwrap();
        let path = fixtures(DIR).join(file);
        let result = io::read_maps(&path, &selection(&case));
        let err = match (kind, result) {
            ("constant", Ok(maps)) => prep::normalize(maps, &PrepSpec::default()).unwrap_err(),
            (_, Ok(_)) => panic!("{name}: expected a '{kind}' error, read fine"),
            (_, Err(e)) => e,
        };
        let msg = err.to_string();
        println!("{name}: {msg}");
        assert!(msg.contains(file), "{name}: message does not name the file: {msg}");
        let cause = match kind {
            "truncated" => "truncated",
            "not_fits" => "not a FITS",
            "not_hdf5" => "not a FITS, HDF5 or NPY",
            "one_d" => "1-D data",
            "all_nan" => "entirely NaN",
            "constant" => "constant map",
            "unknown_hdu" => "no HDU",
            "unknown_dataset" => "no dataset",
            "table_hdu" => "is a table",
            other => panic!("{name}: unknown error kind {other}"),
        };
        let without_path = msg.replace(&path.display().to_string(), "FILE");
        assert!(without_path.contains(cause), "{name}: expected '{cause}' in: {msg}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} bad cases ran");
}
