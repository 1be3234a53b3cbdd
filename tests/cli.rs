//! The `expanse` binary on small inputs: round trips through every writer, provenance, and the
//! bad-input contract (one clear error naming the file and the cause, non-zero exit, no output).

use std::path::{Path, PathBuf};

mod common;
use common::{expanse, fixtures, ok, root};

use expanse::io::{self, fits, Selection};
use expanse::latents::read_model_stack;
use ndarray::{Array3, Axis};

/// A file of tests/fixtures/io, as a command-line argument.
fn fixture(name: &str) -> String {
    fixtures("io").join(name).display().to_string()
}

/// A file of data/samples, as a command-line argument.
fn sample(name: &str) -> String {
    common::sample(name).display().to_string()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn read_all(path: &Path) -> Array3<f32> {
    io::stack(&io::read_maps(path, &Selection::default()).unwrap()).unwrap()
}

fn same_with_nan(a: &Array3<f32>, b: &Array3<f32>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn help_explains_every_subcommand() {
    let top = ok(&["--help"]);
    for cmd in ["inspect", "ingest", "simulate"] {
        assert!(top.contains(cmd), "{cmd} missing from --help");
        let help = ok(&[cmd, "--help"]);
        assert!(help.contains("Usage: expanse"), "{cmd} --help: {help}");
    }
    let ingest = ok(&["ingest", "--help"]);
    for flag in [
        "--out",
        "--hdu",
        "--dataset",
        "--raw",
        "--transform",
        "--range",
        "--crop",
        "--tile",
        "--size",
        "--channels",
        "--band-map",
    ] {
        assert!(ingest.contains(flag), "ingest --help lacks {flag}");
    }
    for cmd in ["power-spectrum", "validate"] {
        let help = ok(&[cmd, "--help"]);
        assert!(help.contains("--hdu") && help.contains("--dataset"), "{cmd} --help lacks --hdu/--dataset");
    }
    assert!(ok(&["simulate", "--help"]).contains("[default: 1e21]"), "large defaults print in scientific notation");
}

#[test]
fn raw_ingest_round_trips_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.fits");
    ok(&["simulate", "--out", sim.to_str().unwrap(), "--count", "3", "--size", "16", "--seed", "5"]);
    let nan_map = fixture("fits_nan_f32.fits");
    let original = read_all(&sim);
    for ext in ["npy", "h5", "fits"] {
        let out = dir.path().join(format!("raw.{ext}"));
        ok(&["ingest", sim.to_str().unwrap(), "--raw", "--out", out.to_str().unwrap()]);
        assert!(same_with_nan(&read_all(&out), &original), "{ext}: raw round trip changed values");
        // NaN survives a raw round trip.
        let out_nan = dir.path().join(format!("nan.{ext}"));
        ok(&["ingest", &nan_map, "--raw", "--out", out_nan.to_str().unwrap()]);
        let a = read_all(Path::new(&nan_map));
        assert!(a.iter().any(|v| v.is_nan()));
        assert!(same_with_nan(&read_all(&out_nan), &a), "{ext}: NaN round trip");
    }
    // NPY provenance sidecar.
    let side = common::json(dir.path().join("raw.npy.json"));
    assert_eq!(side["units"], "cm-2");
    assert_eq!(side["shape"], serde_json::json!([3, 16, 16]));
    // FITS output keeps units and names its sources.
    let (src, _) = fits::read(&dir.path().join("raw.fits"), None).unwrap();
    assert_eq!(src.units.as_deref(), Some("cm-2"));
    assert!(src.cards.iter().any(|c| c.starts_with("HISTORY source:") && c.contains("sim.fits")));
    assert!(src.cards.iter().any(|c| c.starts_with("ORIGIN") && c.contains("expanse")));
}

#[test]
fn raw_fits_keeps_the_source_wcs_and_units() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wcs.fits");
    ok(&["ingest", &fixture("fits_bitpix_m32.fits"), "--raw", "--out", out.to_str().unwrap()]);
    let (src, _) = fits::read(&out, None).unwrap();
    let (orig, _) = fits::read(Path::new(&fixture("fits_bitpix_m32.fits")), None).unwrap();
    for key in ["CTYPE1", "CTYPE2", "CRPIX1", "CRVAL2", "CDELT1", "BUNIT", "OBJECT"] {
        assert_eq!(src.card(key), orig.card(key), "{key}");
    }
}

#[test]
fn a_cropped_and_resized_stack_keeps_a_rescaled_wcs_and_inspect_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.fits");
    // Rows 2..10 and columns 2..10 of the 12 x 16 image, resized to 4 x 4: pixels twice as large.
    ok(&[
        "ingest",
        &fixture("fits_bitpix_m32.fits"),
        "--crop",
        "2,2,8,8",
        "--size",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (src, _) = fits::read(&out, None).unwrap();
    let (orig, _) = fits::read(Path::new(&fixture("fits_bitpix_m32.fits")), None).unwrap();
    let num = |s: &io::Source, k: &str| s.card(k).unwrap().trim().parse::<f64>().unwrap();
    assert_eq!(src.card("CTYPE1"), orig.card("CTYPE1"));
    assert_eq!(num(&src, "CRVAL1"), num(&orig, "CRVAL1"));
    assert!((num(&src, "CDELT1") - 2.0 * num(&orig, "CDELT1")).abs() < 1e-15);
    assert!((num(&src, "CRPIX1") - ((num(&orig, "CRPIX1") - 0.5 - 2.0) / 2.0 + 0.5)).abs() < 1e-12);
    assert!((num(&src, "CRPIX2") - ((num(&orig, "CRPIX2") - 0.5 - 2.0) / 2.0 + 0.5)).abs() < 1e-12);
    // Tiles lie at different places of the image: no single WCS, so none.
    let tiles = dir.path().join("tiles.fits");
    ok(&["ingest", &fixture("fits_bitpix_m32.fits"), "--tile", "4", "--out", tiles.to_str().unwrap()]);
    assert!(fits::read(&tiles, None).unwrap().0.card("CRPIX1").is_none());
    let text = ok(&["inspect", out.to_str().unwrap(), fixture("fits_bitpix_m32.fits").as_str()]);
    assert!(
        text.contains("WCS RA---TAN / DEC--TAN at (53.1625, -27.7914) (pixel 3.5, 2.5), pixel 0.1080 x 0.1080 arcsec"),
        "{text}"
    );
    assert!(text.contains("OBJECT = fits_bitpix_m32"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", out.to_str().unwrap()])).unwrap();
    assert!(json[0]["items"][0]["wcs"].as_str().unwrap().contains("0.1080 x 0.1080 arcsec"));
}

#[test]
fn normalized_ingest_records_a_normalization_that_inverts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.fits");
    ok(&["simulate", "--out", sim.to_str().unwrap(), "--count", "4", "--size", "16", "--seed", "9"]);
    let original = read_all(&sim);
    for ext in ["npy", "h5", "fits"] {
        let out = dir.path().join(format!("norm.{ext}"));
        let text = ok(&[
            "ingest",
            sim.to_str().unwrap(),
            "--transform",
            "log10",
            "--channels",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(text.contains("normalization: log10"), "{text}");
        let ms = read_model_stack(&out).unwrap();
        assert_eq!(ms.data.dim(), (4, 3, 16, 16));
        let lo = ms.data.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = ms.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!((lo + 1.0).abs() < 1e-5 && (hi - 1.0).abs() < 1e-5, "{ext}: range [{lo}, {hi}]");
        let back = ms.normalization.to_physical(ms.data.view(), Some(ms.mask.view())).unwrap();
        for (x, y) in original.iter().zip(back.iter()) {
            // float32 storage of the model values limits the round trip to ~1e-6 relative.
            assert!(((x - y) / x).abs() < 1e-5, "{ext}: {x} vs {y}");
        }
        assert_eq!(ms.normalization.units.as_deref(), Some("cm-2"));
    }
}

#[test]
fn blank_pixels_get_the_median_fill_and_a_mask() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("masked.h5");
    ok(&["ingest", &fixture("fits_nan_f32.fits"), "--out", out.to_str().unwrap()]);
    let ms = read_model_stack(&out).unwrap();
    let src = read_all(Path::new(&fixture("fits_nan_f32.fits")));
    let blanks = src.iter().filter(|v| v.is_nan()).count();
    assert!(blanks > 0);
    assert_eq!(ms.mask.iter().filter(|&&m| m == 1).count(), blanks);
    for ((s, m), v) in src.iter().zip(ms.mask.iter()).zip(ms.data.index_axis(Axis(1), 0).iter()) {
        assert_eq!(s.is_nan(), *m == 1);
        if s.is_nan() {
            assert_eq!(*v, ms.normalization.fill_model);
        }
    }
    let back = ms.normalization.to_physical(ms.data.view(), Some(ms.mask.view())).unwrap();
    assert_eq!(back.iter().filter(|v| v.is_nan()).count(), blanks);
}

#[test]
fn geometry_crops_tiles_and_resizes_to_the_model_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiles.npy");
    // 4 maps of 256x256 → 2x2 tiles of 128 each → resized to 32.
    ok(&[
        "ingest",
        &sample("clouds_256.fits"),
        "--transform",
        "log10",
        "--tile",
        "128",
        "--size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ms = read_model_stack(&out).unwrap();
    assert_eq!(ms.data.dim(), (16, 1, 32, 32));
    assert_eq!(ms.normalization.shape, [32, 32]);
    let out2 = dir.path().join("crop.npy");
    ok(&[
        "ingest",
        &sample("hubble_xdf_64.fits"),
        "--crop",
        "center:48",
        "--size",
        "16",
        "--transform",
        "asinh",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(read_model_stack(&out2).unwrap().data.dim(), (32, 1, 16, 16));
}

#[test]
fn three_band_cubes_map_onto_channels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rgb.h5");
    ok(&["ingest", &fixture("fits_cube_f32.fits"), "--band-map", "2,1,0", "--out", out.to_str().unwrap()]);
    let ms = read_model_stack(&out).unwrap();
    assert_eq!(ms.data.dim(), (1, 3, 12, 16));
    let back = ms.normalization.to_physical(ms.data.view(), None).unwrap();
    let src = read_all(Path::new(&fixture("fits_cube_f32.fits")));
    for (x, y) in src.iter().zip(back.iter()) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn inspect_reports_shapes_units_and_nan_fraction() {
    let text = ok(&["inspect", &fixture("fits_mef.fits"), &fixture("hdf5_sim.h5"), &fixture("npy_f32_2d.npy")]);
    assert!(text.contains("HDU 1 (SCI)") && text.contains("bintable") && text.contains("/sim/snap_010/density"));
    assert!(text.contains("g cm-3") && text.contains("electron/s"));
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", &fixture("hdf5_sim.h5")])).unwrap();
    let vx = json[0]["items"].as_array().unwrap().iter().find(|i| i["location"] == "/sim/snap_010/velocity_x").unwrap();
    assert!(vx["stats"]["nan_fraction"].as_f64().unwrap() > 0.0);
    assert_eq!(vx["units"], "km s-1");
}

/// Runs a failing command in an empty folder and checks the error contract.
fn assert_clean_failure(args: &[&str], file: &str, cause: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.fits");
    let mut full: Vec<&str> = args.to_vec();
    let out_s = out.to_str().unwrap().to_string();
    full.extend(["--out", &out_s]);
    let res = expanse(&full);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{args:?} succeeded");
    assert_eq!(res.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: want one error line, got: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(file), "{args:?}: error does not name {file}: {stderr}");
    assert!(stderr.contains(cause), "{args:?}: error does not say '{cause}': {stderr}");
    assert!(files_in(dir.path()).is_empty(), "{args:?} left files: {:?}", files_in(dir.path()));
}

fn assert_clean_failure_at(args: &[&str], out: &Path) {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--out", out.to_str().unwrap()]);
    let res = expanse(&full);
    assert!(!res.status.success(), "{args:?} succeeded");
    assert!(!out.exists());
}

#[test]
fn bad_inputs_fail_cleanly() {
    let missing = fixture("does_not_exist.fits");
    assert_clean_failure(&["ingest", &missing], "does_not_exist.fits", "no such file");
    assert_clean_failure(
        &["ingest", &fixture("bad_not_fits.fits")],
        "bad_not_fits.fits",
        "not a FITS, HDF5 or NPY file",
    );
    assert_clean_failure(&["ingest", &fixture("bad_not_hdf5.h5")], "bad_not_hdf5.h5", "not a FITS, HDF5 or NPY file");
    assert_clean_failure(&["ingest", &fixture("bad_truncated_data.fits")], "bad_truncated_data.fits", "truncated");
    assert_clean_failure(&["ingest", &fixture("bad_truncated_header.fits")], "bad_truncated_header.fits", "truncated");
    assert_clean_failure(&["ingest", &fixture("bad_one_d.fits")], "bad_one_d.fits", "1-D data");
    assert_clean_failure(&["ingest", &fixture("bad_one_d.npy")], "bad_one_d.npy", "1-D data");
    assert_clean_failure(
        &["ingest", &fixture("fits_mef.fits"), "--hdu", "NOPE"],
        "fits_mef.fits",
        "no HDU named 'NOPE'",
    );
    assert_clean_failure(&["ingest", &fixture("fits_mef.fits"), "--hdu", "7"], "fits_mef.fits", "no HDU 7");
    assert_clean_failure(
        &["ingest", &fixture("hdf5_sim.h5"), "--dataset", "/no/such"],
        "hdf5_sim.h5",
        "no dataset '/no/such'",
    );
    assert_clean_failure(&["ingest", &fixture("bad_all_nan.fits"), "--raw"], "bad_all_nan.fits", "entirely NaN");
    assert_clean_failure(&["ingest", &fixture("bad_constant.fits")], "bad_constant.fits", "constant map");
    // Mixed shapes: a 12x16 map and an 8x5 map in one stack, without a geometry option.
    assert_clean_failure(
        &["ingest", &fixture("fits_bitpix_m32.fits"), &fixture("npy_f32_2d.npy"), "--raw"],
        "npy_f32_2d.npy",
        "mixed map shapes",
    );
    // A later input failing must not leave the earlier ones' output behind.
    assert_clean_failure(
        &["ingest", &sample("clouds_64.fits"), &fixture("bad_truncated_data.fits")],
        "bad_truncated_data.fits",
        "truncated",
    );
}

#[test]
fn an_hdf5_dataset_claiming_more_than_its_file_holds_is_refused_before_allocation() {
    // Chunked, compressed datasets with nothing written: the file is a few kB, the headers claim
    // 2^40 and 2^63 elements (a damaged header made `ingest` abort with "capacity overflow").
    let dir = tempfile::tempdir().unwrap();
    for (name, shape, cause) in [
        ("huge.h5", [1usize << 20, 1 << 10, 1 << 10], "claims 1048576 x 1024 x 1024 elements"),
        ("overflow.h5", [1usize << 21, 1 << 21, 1 << 21], "more than any machine can hold"),
    ] {
        let written = dir.path().join(format!("written_{name}"));
        let file = hdf5::File::create(&written).unwrap();
        let ds = file.new_dataset::<f32>().chunk([1, 64, 64]).deflate(4).shape(shape).create("maps").unwrap();
        drop(ds);
        file.close().unwrap();
        // The CLI reads a copy: HDF5 opens files without close-on-exec, so a process another test
        // spawned while `written` was open can hold its lock after this process closed it.
        let path = dir.path().join(name);
        std::fs::copy(&written, &path).unwrap();
        let p = path.to_str().unwrap().to_string();
        assert_clean_failure(&["ingest", &p, "--raw"], name, cause);
        let res = expanse(&["inspect", &p]);
        assert!(!String::from_utf8_lossy(&res.stderr).contains("panicked"));
    }
}

#[test]
fn an_npy_header_claiming_more_than_its_file_holds_is_refused_before_allocation() {
    // A 4x4 float32 array whose header was overwritten to claim 2^42 (and 2^64) elements: the
    // reader allocated 16 TiB and aborted the process.
    let dir = tempfile::tempdir().unwrap();
    for (name, shape, cause) in [
        ("huge.npy", "(1099511627776, 4)", "claims 4398046511104 elements (17592186044416 bytes)"),
        ("overflow.npy", "(4294967296, 4294967296)", "claims 18446744073709551616 elements"),
    ] {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut header = format!("{dict:<117}\n").into_bytes();
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.append(&mut header);
        bytes.extend([0u8; 64]);
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap().to_string();
        assert_clean_failure(&["ingest", &p, "--raw"], name, cause);
    }
}

#[test]
fn a_failed_write_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    // An output "folder" that is a file cannot be created.
    std::fs::write(dir.path().join("blocker"), b"x").unwrap();
    let out = dir.path().join("blocker").join("x.h5");
    let res = expanse(&["ingest", &sample("clouds_64.fits"), "--raw", "--out", out.to_str().unwrap()]);
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("blocker") && stderr.contains("cannot create folder"), "{stderr}");
    std::fs::remove_file(dir.path().join("blocker")).unwrap();
    // A missing output folder is created, and removed again when the run fails.
    let nested = dir.path().join("new").join("deeper").join("x.h5");
    assert_clean_failure_at(&["ingest", &fixture("bad_one_d.fits")], &nested);
    assert!(!dir.path().join("new").exists(), "failed run left its new output folder behind");
    ok(&["ingest", &sample("clouds_64.fits"), "--raw", "--out", nested.to_str().unwrap()]);
    assert!(nested.exists());
    std::fs::remove_dir_all(dir.path().join("new")).unwrap();
    let res =
        expanse(&["ingest", &sample("clouds_64.fits"), "--raw", "--out", dir.path().join("x.txt").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&res.stderr).contains("unknown output extension"));
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn simulate_is_deterministic_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    ok(&["simulate", "--out", a.to_str().unwrap(), "--count", "2", "--size", "32", "--seed", "11"]);
    ok(&["simulate", "--out", b.to_str().unwrap(), "--count", "2", "--size", "32", "--seed", "11"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn shipped_samples_are_what_simulate_makes() {
    // data/samples/clouds_64.fits is `expanse simulate --count 32 --size 64 --seed 1`.
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("c.fits");
    ok(&["simulate", "--out", fresh.to_str().unwrap(), "--count", "32", "--size", "64", "--seed", "1"]);
    assert_eq!(read_all(&fresh), read_all(Path::new(&sample("clouds_64.fits"))));
}

#[test]
fn mostly_blank_maps_are_dropped_and_data_surprises_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // Four positive maps: the second is 80 % blank, the third has 5 pixels at or below zero.
    let mut maps = ndarray::Array3::<f32>::from_shape_fn((4, 32, 32), |(m, i, j)| {
        1e20 * (1.0 + m as f32) * (1.5 + ((i * 7 + j * 3) % 11) as f32)
    });
    for i in 0..26 {
        for j in 0..32 {
            maps[[1, i, j]] = f32::NAN;
        }
    }
    for j in 0..5 {
        maps[[2, 3, j]] = -(j as f32);
    }
    let input = dir.path().join("maps.npy");
    ndarray_npy::write_npy(&input, &maps).unwrap();
    let out = dir.path().join("stack.h5");
    let text = ok(&["ingest", input.to_str().unwrap(), "--transform", "log10", "--out", out.to_str().unwrap()]);
    assert!(
        text.contains("warning: 1 map(s) of") && text.contains("more than 50 % of their pixels are blank"),
        "{text}"
    );
    assert!(text.contains("warning: log10: 5 pixel(s) <= 0 in 1 map(s) (most in"), "{text}");
    assert!(text.contains("plane 2"), "{text}");
    assert!(text.contains("stack shape (3, 1, 32, 32)"), "{text}");
    let text = ok(&[
        "ingest",
        input.to_str().unwrap(),
        "--max-blank",
        "0.9",
        "--out",
        dir.path().join("all.h5").to_str().unwrap(),
    ]);
    assert!(text.contains("stack shape (4, 1, 32, 32)") && !text.contains("blank (max_blank)"), "{text}");
    let r = expanse(&["ingest", input.to_str().unwrap(), "--max-blank", "1.5", "--out", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("--max-blank: a fraction of pixels"), "{r:?}");

    // Inverting physical values: it runs, with a warning naming the file.
    let raw = dir.path().join("raw.npy");
    ndarray_npy::write_npy(&raw, &ndarray::Array4::<f32>::from_elem((1, 3, 32, 32), 1e21)).unwrap();
    let model = root().join("data/models/expanse-natural-32");
    let r = expanse(&[
        "invert",
        "--model",
        model.to_str().unwrap(),
        "--input",
        raw.to_str().unwrap(),
        "--steps",
        "3",
        "--t0",
        "20",
        "--out",
        dir.path().join("z.npy").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success() && err.contains("warning: ") && err.contains("raw.npy") && err.contains("never normalized"),
        "{err}"
    );
}

#[test]
fn every_option_of_every_command_is_described() {
    let top = ok(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 20 && commands.contains(&"validate".to_string()), "{commands:?}");
    for cmd in &commands {
        let help = ok(&[cmd, "--help"]);
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim_start().starts_with('-') && l.starts_with("  ") {
                // Short help puts the description after the flag on the same line, long help on
                // the next one.
                let same_line = l.trim().split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty());
                let next = lines.get(i + 1).map_or("", |n| n.trim());
                let next_line = !next.is_empty() && !next.starts_with('-');
                assert!(same_line || next_line, "expanse {cmd} --help: `{}` has no description", l.trim());
            }
        }
    }
}
