//! README.md promises exactly two set-up commands; this keeps them true: the test command is
//! the one `.ci/run` runs, and the main-job command's arguments run successfully.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use expanse::stats::battery::Statistic;

use common::{manifest, root};

fn set_up_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## Set up").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut cmds = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if in_block {
            cmds.push(line.trim().to_string());
        }
    }
    cmds
}

#[test]
fn readme_has_two_set_up_commands_and_ci_runs_the_test_one() {
    let cmds = set_up_commands();
    assert_eq!(cmds.len(), 2, "README set-up commands: {cmds:?}");
    assert!(cmds[0].starts_with("cargo run --release -- "));
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let lines: Vec<&str> = ci.lines().map(str::trim).collect();
    let test = lines
        .iter()
        .position(|l| *l == cmds[1])
        .unwrap_or_else(|| panic!(".ci/run must run the README's test command `{}` as a line of its own", cmds[1]));
    let check = lines
        .iter()
        .position(|l| !l.starts_with('#') && l.contains("tools/check_outputs.py"))
        .expect(".ci/run must run tools/check_outputs.py");
    assert!(check > test, ".ci/run must run tools/check_outputs.py after the README's test command");
}

#[test]
fn the_main_job_command_runs() {
    let cmds = set_up_commands();
    let args: Vec<String> = cmds[0].split_once(" -- ").unwrap().1.split_whitespace().map(str::to_string).collect();
    let dir = tempfile::tempdir().unwrap();
    // Same arguments, with outputs redirected into a temporary folder.
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.strip_prefix("out/") {
            Some(rest) => dir.path().join(rest).display().to_string(),
            None => a,
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_expanse")).args(&args).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The quickstart run: every stage finished, synthetic maps in physical units, the report.
    let run = dir.path().join("quickstart");
    let manifest = manifest(&run);
    assert_eq!(manifest["complete"], true);
    assert_eq!(manifest["stages"]["sample/clouds"]["counts"]["accepted"], 16);
    // The quickstart's numbers, as README and BENCHMARKS quote them: a run is deterministic (and
    // bit-identical at any thread count), so these move only when the method or the model does;
    // 1 % leaves room for nothing but rounding.
    let counts = |stage: &str| -> BTreeMap<String, serde_json::Value> {
        manifest["stages"][stage]["counts"].as_object().unwrap().clone().into_iter().collect()
    };
    let sampling = expanse::pipeline::SampleRecord::from_counts(&counts("sample/clouds")).unwrap();
    let v = expanse::validate::ValidationSummary::from_counts(&counts("validate/clouds")).unwrap();
    let battery = v.battery.clone().unwrap();
    // Candidates tried is a count: one candidate flipping at a test's band edge on another CPU
    // moves it by about one acceptance period (32 / 16 = 2), so it gets two of them.
    let tried = sampling.tried as f64;
    assert!((tried - 32.0).abs() <= 4.0, "sample/clouds tried: {tried}, stored 32");
    let refinement = counts("decode/clouds")["refinement_loss_after"].as_f64().unwrap();
    for (key, got, want) in [
        ("slope_real", v.slope_real.mean, -3.0434),
        ("slope_synthetic", v.slope_synthetic.mean, -3.2198),
        ("level_spread_ratio", v.level_spread_ratio, 0.65909),
        ("hellinger", v.hellinger.mean, 0.015943),
        ("memorization_ratio", v.memorization_ratio, 0.83949),
        ("chi2_power_spectrum", battery.chi2_of(Statistic::PowerSpectrum).unwrap(), 0.75793),
        ("chi2_scattering", battery.chi2_of(Statistic::Scattering).unwrap(), 1.7336),
        ("battery_chi2", battery.chi2, 0.89745),
        ("c2st_accuracy", battery.c2st.unwrap().mean, 0.51562),
        ("refinement_loss_after", refinement, 0.024203),
    ] {
        assert!((got - want).abs() <= 0.01 * want.abs(), "{key}: {got}, stored {want}");
    }
    for f in [
        "samples/clouds.fits",
        "samples/clouds.h5",
        "samples/clouds.png",
        "report/clouds/report.json",
        "report/clouds/power_spectra.png",
        "report/clouds/maps.png",
        "prior/prior.diagnostics.png",
        "summary.md",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let maps = expanse::io::read_maps(&run.join("samples/clouds.fits"), &Default::default()).unwrap();
    assert_eq!(maps.len(), 16);
    assert_eq!(maps[0].source.units.as_deref(), Some("cm-2"));
    assert!(maps.iter().all(|m| m.data.iter().all(|v| v.is_finite() && *v > 0.0)));
}

/// The README's configuration table states each key's default: where that default is a number, a
/// quoted string or a list, it must be what a config that leaves the key out gets.
#[test]
fn readme_config_defaults_are_the_library_defaults() {
    let minimal = "[model]\npath = \"m\"\n[[domain]]\nname = \"d\"\ninputs = [\"x.fits\"]\n";
    let config: expanse::pipeline::RunConfig = toml::from_str(minimal).unwrap();
    let defaults: toml::Value = toml::from_str(&config.to_toml()).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let (Some(key), Some(stated)) = (cells.first().and_then(|c| c.strip_prefix("| `")), cells.get(1)) else {
            continue;
        };
        let Some(key) = key.strip_suffix('`') else { continue };
        let Some((section, field)) = key.split_once('.') else { continue };
        if !field.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            continue;
        }
        let stated = stated.trim_matches('`');
        let parsed: Result<toml::Value, _> = toml::from_str(&format!("v = {stated}"));
        let Ok(stated_value) = parsed.map(|t| t["v"].clone()) else { continue };
        // A key the serialized config does not hold (an optional one left unset, whose default
        // lives in the statistic it configures) is skipped; the keys named below must be checked.
        let Some(actual) = defaults.get(section).and_then(|s| s.get(field)) else { continue };
        let same = match (&stated_value, actual) {
            (toml::Value::Integer(a), toml::Value::Float(b)) => *a as f64 == *b,
            (a, b) => a == b,
        };
        assert!(same, "README says `{key}` defaults to {stated}, the library to {actual}");
        checked.push(key.to_string());
    }
    for key in ["inversion.steps", "inversion.t0", "sampling.count", "refinement.iterations", "prior.kind"] {
        assert!(checked.iter().any(|k| k == key), "README's default for `{key}` was not checked: {checked:?}");
    }
}
