//! `expanse fidelity` on a tiny benchmark: every variant × seed becomes a run folder, runs with
//! the same grid share one inversion, the tables carry every column and the targets, a rerun
//! keeps the finished runs, and bad benchmark files are refused before any work.

mod common;

use std::path::{Path, PathBuf};

use common::{expanse, json, manifest, ok, root, sample};

/// Two variants (scalar and stationary priors on one 6-point grid) × two seeds on 8 cloud maps.
fn bench(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[benchmark]
seeds = [0, 1]

[model]
path = "{model}"
batch = 4

[inversion]
steps = 6
t0 = 300

[sampling]
count = 3
k = 4
budget = 50000

[[domain]]
name = "clouds"
inputs = ["{maps}"]
max_maps = 8
transform = "log10"
size = 32

[[variant]]
name = "paper"
prior.kind = "scalar"

[[variant]]
name = "stationary"
prior.kind = "stationary"
sampling.debias = "rings"
sampling.norm = "match"
sampling.tests = ["distance", "origin", "pair", "norm"]
{extra}"#,
        model = root().join("data/models/expanse-natural-32").display(),
        maps = sample("clouds_64.fits").display(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_variant_and_seed_is_a_run_and_the_tables_report_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = bench(dir.path(), "");
    let out = dir.path().join("fid");
    let text = ok(&["fidelity", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    for v in ["paper", "stationary"] {
        for s in [0, 1] {
            let run = out.join("runs").join(v).join(format!("seed{s}"));
            assert!(run.join("report/clouds/report.json").is_file(), "{v} seed {s}");
            let m = manifest(&run);
            assert_eq!(m["complete"], true);
        }
    }
    // One inversion for the shared grid: only the first run evaluated the UNet for it.
    let evals: Vec<u64> = ["paper/seed0", "paper/seed1", "stationary/seed0", "stationary/seed1"]
        .iter()
        .map(|r| {
            let m = manifest(&out.join("runs").join(r));
            m["stages"]["invert/clouds"]["counts"]["unet_evaluations"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(evals, vec![8 * 5, 0, 0, 0], "{evals:?}");
    let r = json(out.join("fidelity.json"));
    // What made the numbers: the version, the commit it was built from and the CPU.
    let commit = r["commit"].as_str().unwrap();
    assert!(commit == "unknown" || commit.trim_end_matches("-dirty").len() == 40, "{commit}");
    assert!(r["cpu"].as_str().unwrap().contains("logical CPUs"), "{}", r["cpu"]);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert!(row["error"].is_null(), "{row}");
        // The run's own validation record, read back typed from its manifest.
        let v: expanse::validate::ValidationSummary = serde_json::from_value(row["validation"].clone()).unwrap();
        for (key, x) in [
            ("welch_t", v.slope_welch_t),
            ("level_ratio", v.level_spread_ratio),
            ("hellinger", v.hellinger.mean),
            ("memorization_ratio", v.memorization_ratio),
        ] {
            assert!(x.is_finite(), "{key}: {row}");
        }
        // Three synthetic maps are too few for the C2ST's folds: the record says so, with no number.
        assert!(v.battery.is_some_and(|b| b.c2st.is_none() && b.statistics.len() == 5), "{row}");
        assert!(v.verdict[0].starts_with("n/a: classifier two-sample test"), "{row}");
        // The 6-point grid to t0 = 300 reconstructs these 32² clouds at 28.0 dB (mean over maps;
        // deterministic): a lost dB or two fails here.
        let db = row["reconstruction_db"][0].as_f64().unwrap();
        assert!((26.5..30.0).contains(&db), "{row}");
        assert_eq!(row["accepted"].as_u64(), Some(3));
    }
    let md = std::fs::read_to_string(out.join("fidelity.md")).unwrap();
    assert!(md.contains(&format!("Made by expanse {} (commit {commit}) on ", env!("CARGO_PKG_VERSION"))), "{md}");
    assert!(
        md.contains("### clouds") && md.contains("| paper |") && md.contains("| stationary |") && md.contains("/5"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(text.contains("targets met per variant"), "{text}");
    // A rerun keeps every finished run and writes the same table.
    let before = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    ok(&["fidelity", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--variants", "stationary,paper"]);
    let log = std::fs::read_to_string(out.join("runs/paper/seed0/run.log")).unwrap();
    assert!(log.contains("decode/clouds: finished earlier, kept"), "{log}");
    let after = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    let numbers = |t: &str| t.lines().map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(numbers(&before), numbers(&after), "everything but the timing column is reproduced");
}

#[test]
fn bad_benchmarks_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[variant]]\nname = \"paper\"\n", "two variants are named 'paper'"),
        (
            "[[variant]]\nname = \"x\"\nprior.kind = \"gaussian\"\n",
            "variant 'x': prior.kind: unknown prior kind 'gaussian'",
        ),
        ("[[variant]]\nname = \"y\"\ninversion.t0 = 2\n", "variant 'y': inversion.steps"),
        ("[[variant]]\nname = \"z\"\npriors.kind = \"scalar\"\n", "variant 'z': priors.kind: unknown field `priors`"),
        ("[[variant]]\nname = \"w\"\nsampling.bnd = [5, 95]\n", "variant 'w': sampling.bnd: unknown field `bnd`"),
    ];
    for (extra, want) in cases {
        let config = bench(dir.path(), extra);
        let out = dir.path().join("never");
        let e = expanse(&["fidelity", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && err.contains(want), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
        assert!(!out.exists(), "nothing written for {extra}");
    }
    let config = bench(dir.path(), "");
    let e = expanse(&[
        "fidelity",
        config.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--variants",
        "nope",
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no variant 'nope'"));
}
