//! `expanse run`: config errors before any work, dry runs, refusing to overwrite, and a run
//! killed twice (SIGKILL during inversion, then during decoding) and resumed giving the same
//! files as an uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{expanse, json, manifest, ok, root, sample};

/// A small run on the shipped base model: 8 cloud maps, batch 2, a 10-point grid, 4 samples.
fn small_config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[run]
name = "small"
seed = 3
formats = ["fits", "npy"]

[model]
path = "{model}"
batch = 2

[inversion]
steps = 10

[sampling]
count = 4
k = 5
budget = 50000

[[domain]]
name = "clouds"
inputs = ["{maps}"]
max_maps = 8
transform = "log10"
size = 32
{extra}"#,
        model = root().join("data/models/expanse-natural-32").display(),
        maps = sample("clouds_64.fits").display(),
    );
    let path = dir.join("small.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// SHA-256 of every file of a run folder except the manifest and the log (which hold times).
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                if rel != Path::new("manifest.json") && rel != Path::new("run.log") {
                    let hash = expanse::pipeline::manifest::FileHash::of(&p, &rel).unwrap().sha256;
                    out.insert(rel, hash);
                }
            }
        }
    }
    out
}

/// Starts a run and waits until `marker` (relative to the run folder) exists.
fn start_and_wait_for(config: &Path, out: &Path, resume: bool, marker: &str) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_expanse"));
    cmd.env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH).arg("run").arg(config).arg("--out").arg(out);
    if resume {
        cmd.arg("--resume");
    }
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !out.join(marker).exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {marker} appeared");
        assert!(start.elapsed() < Duration::from_secs(300), "{marker} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Starts a run and SIGKILLs it as soon as `marker` exists.
fn run_and_kill_at(config: &Path, out: &Path, resume: bool, marker: &str) {
    let mut child = start_and_wait_for(config, out, resume, marker);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_and_resumed_run_writes_the_same_files_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "");
    let out = dir.path().join("run");
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(stdout.contains("| clouds | 8 |"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(m["complete"], true);
    assert_eq!(m["stages"].as_object().unwrap().len(), 6);
    assert_eq!(m["stages"]["invert/clouds"]["counts"]["unet_evaluations"], 8 * 9);
    assert_eq!(m["stages"]["decode/clouds"]["counts"]["unet_evaluations"], 4 * 10);
    assert_eq!(m["seeds"]["run"], 3);
    assert_eq!(m["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
    let reference = hashes(&out);
    // The same run into another folder writes the same bytes (paths inside a run are recorded
    // relative to it).
    let elsewhere = dir.path().join("elsewhere/run");
    ok(&["run", config.to_str().unwrap(), "--out", elsewhere.to_str().unwrap()]);
    assert_eq!(hashes(&elsewhere), reference);
    for f in [
        "config.toml",
        "summary.md",
        "stacks/clouds.h5",
        "stacks/clouds.real.fits",
        "latents/clouds.h5",
        "prior/prior.h5",
        "samples/clouds.latents.npy",
        "samples/clouds.fits",
        "samples/clouds.npy",
        "samples/clouds.npy.json",
        "samples/clouds.png",
        "report/clouds/report.json",
        "report/clouds/power_spectra.png",
    ] {
        assert!(reference.contains_key(Path::new(f)), "missing {f}: {:?}", reference.keys());
    }
    assert!(!out.join("latents/clouds.partial").exists() && !out.join("samples/clouds.partial").exists());
    // The synthetic maps name the model that made them and the whole grid.
    let side = json(out.join("samples/clouds.npy.json"));
    let records = &side["provenance"]["records"];
    let weights =
        m["model"].as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with(".safetensors")).unwrap();
    assert_eq!(records["model"]["weights_sha256"], weights["sha256"], "{records}");
    assert!(records["model"]["folder"].as_str().unwrap().ends_with("expanse-natural-32"));
    assert_eq!((records["ddim"]["steps"].as_u64(), records["ddim"]["t0"].as_u64()), (Some(10), Some(50)), "{records}");
    assert!(records["ddim"].get("clip").is_some() && records["sampling"].is_object());

    // The same run in the same folder, killed during inversion and again during decoding.
    std::fs::remove_dir_all(&out).unwrap();
    run_and_kill_at(&config, &out, false, "latents/clouds.partial/batch_00000.npy");
    assert!(manifest(&out)["stages"].get("invert/clouds").is_none());
    run_and_kill_at(&config, &out, true, "samples/clouds.partial/batch_00000.npy");
    let m = manifest(&out);
    assert!(m["stages"].get("decode/clouds").is_none() && m["complete"] == false);
    assert!(m["stages"]["invert/clouds"]["counts"]["batches_from_checkpoints"].as_u64().unwrap() >= 1);
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("invert/clouds: finished earlier, kept"), "{stdout}");
    // UNet evaluations count the work of the invocation that finished the stage, not the
    // batches it took from checkpoints (batch 2: 9 evaluations a map inverting, 10 decoding).
    let m = manifest(&out);
    for (stage, maps, per_map) in [("invert/clouds", 8, 9), ("decode/clouds", 4, 10)] {
        let c = &m["stages"][stage]["counts"];
        let reused = c["batches_from_checkpoints"].as_u64().unwrap();
        assert!(reused >= 1, "{stage}: {c}");
        assert_eq!(c["unet_evaluations"].as_u64().unwrap(), per_map * (maps - 2 * reused), "{stage}: {c}");
    }
    assert_eq!(hashes(&out), reference);

    // Resuming a finished run redoes nothing; a damaged output is redone, with what follows it.
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("0 stage(s) run, 6 kept"), "{stdout}");
    std::fs::write(out.join("samples/clouds.npy.json"), "{}").unwrap();
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("2 stage(s) run, 4 kept"), "{stdout}");
    assert_eq!(hashes(&out), reference);
}

#[test]
fn a_run_folder_is_not_overwritten_nor_worked_on_by_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "");
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let r = expanse(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("already exists and is not empty"), "{err}");
    assert!(r.stdout.is_empty(), "the plan printed before the refusal");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    // A run killed before its manifest existed is started afresh by --resume.
    let out3 = dir.path().join("run3");
    std::fs::create_dir(&out3).unwrap();
    std::fs::write(out3.join("config.toml"), "partial").unwrap();
    std::fs::write(out3.join(".lock"), "4000000000").unwrap();
    // With stderr not a terminal (a batch job's log), progress comes as lines at an interval.
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_expanse"))
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .args(["run", config.to_str().unwrap(), "--out", out3.to_str().unwrap(), "--resume"])
        .env("EXPANSE_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("invert clouds: ") && l.contains(" steps (")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("decode clouds: ")), "{err}");
    assert_eq!(manifest(&out3)["complete"], true);
    assert!(!out3.join(".lock").exists());

    // While a run works on a folder, a second process may not.
    let out = dir.path().join("run2");
    let mut child = start_and_wait_for(&config, &out, false, "stacks/clouds.h5");
    let r = expanse(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("another expanse process"), "{err}");
    assert!(
        !err.contains("--resume") && !err.contains("stopped"),
        "a refusal must not suggest the refused command: {err}"
    );
    // SIGTERM (scancel, a time limit) removes the lock; the process dies of the signal.
    // SAFETY: sends a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
    assert!(!out.join(".lock").exists(), "SIGTERM left the lock behind");
    // The log says what stopped the run and how to continue it; so does Ctrl-C.
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(last.contains("stopped by SIGTERM: the run stopped") && last.contains("--resume`"), "{log}");
    let stamp = &last.as_bytes()[..22];
    assert!(stamp.starts_with(b"20") && stamp[10] == b'T' && stamp[19] == b'Z' && &stamp[20..] == b"  ", "{last}");
    let child = Command::new(env!("CARGO_BIN_EXE_expanse"))
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .args(["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(out.join("run.log")).unwrap().contains("resuming run") {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never resumed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sends a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out_child = child.wait_with_output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out_child.status), Some(libc::SIGINT));
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.lines().last().unwrap().contains("interrupted (Ctrl-C, SIGINT): the run stopped"), "{log}");
    let err = String::from_utf8_lossy(&out_child.stderr);
    assert!(err.contains("interrupted (Ctrl-C, SIGINT): the run stopped") && err.contains("--resume`"), "{err}");
}

#[test]
fn a_changed_config_redoes_only_the_stages_that_read_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "");
    let out = dir.path().join("run");
    ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let first = manifest(&out);
    // After the inversion, the log says how long the run's remaining UNet work will take.
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.contains("run: 40 UNet evaluations left, about "), "{log}");
    let first_config = std::fs::read_to_string(out.join("config.toml")).unwrap();

    // More maps and another seed: inversion and fit are kept, sampling onwards is redone, and the
    // files are those of a fresh run of the new config.
    replace_in(&config, "count = 4", "count = 5");
    replace_in(&config, "seed = 3", "seed = 4");
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("changed since the last invocation: run.seed, sampling.count"), "{stdout}");
    assert!(stdout.contains("invert/clouds: finished earlier, kept"), "{stdout}");
    assert!(stdout.contains("3 stage(s) run, 3 kept"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(m["stages"]["invert/clouds"], first["stages"]["invert/clouds"]);
    assert_eq!(m["stages"]["decode/clouds"]["counts"]["maps"], 5);
    assert_eq!(m["seeds"]["run"], 4);
    let history = m["config_history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["previous_config"].as_str().unwrap(), first_config);
    assert_eq!(history[0]["changes"], serde_json::json!(["run.seed", "sampling.count"]));
    assert_eq!(history[0]["redone"].as_array().unwrap().len(), 3);
    let fresh = dir.path().join("fresh");
    ok(&["run", config.to_str().unwrap(), "--out", fresh.to_str().unwrap()]);
    assert_eq!(hashes(&out), hashes(&fresh));

    // A domain's normalization: everything from its ingest is redone; only validation: only it.
    small_config(dir.path(), "range = \"percentile:1,99\"\n");
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("domain 'clouds'.range"), "{stdout}");
    assert!(stdout.contains("6 stage(s) run, 0 kept"), "{stdout}");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "[validation]\nresamples = 20\n").unwrap();
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("1 stage(s) run, 5 kept"), "{stdout}");
    assert_eq!(manifest(&out)["config_history"].as_array().unwrap().len(), 3);

    // Input files that changed on disk redo their domain from ingest, with the reason in the log.
    let copy = dir.path().join("maps.fits");
    std::fs::copy(sample("clouds_64.fits"), &copy).unwrap();
    replace_in(&config, &sample("clouds_64.fits").display().to_string(), &copy.display().to_string());
    ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("0 stage(s) run, 6 kept"), "{stdout}");
    let mut bytes = std::fs::read(&copy).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("changed since the last invocation: inputs of domain 'clouds'"), "{stdout}");
    assert!(stdout.contains("6 stage(s) run, 0 kept"), "{stdout}");

    // A validation recorded in another layout (an older expanse's flat counts) is redone, not
    // read back as missing numbers.
    let mut m = manifest(&out);
    let record = m["stages"]["validate/clouds"]["counts"]["validation"].clone();
    m["stages"]["validate/clouds"]["counts"] = serde_json::json!({"hellinger": record["hellinger"]["mean"]});
    std::fs::write(out.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]);
    assert!(stdout.contains("1 stage(s) run, 5 kept"), "{stdout}");
    assert_eq!(manifest(&out)["stages"]["validate/clouds"]["counts"]["validation"], record);
}

#[test]
fn dry_run_prints_the_plan_and_cost_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "");
    let out = dir.path().join("run");
    let stdout = ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"]);
    assert!(stdout.contains("domain clouds: 32 map(s) read, 8 image(s) of 3x32x32"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    // Maps of another size than the model's training size run, with a warning in the plan.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, std::fs::read_to_string(&config).unwrap().replace("size = 32", "size = 16")).unwrap();
    let stdout = ok(&["run", other.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"]);
    assert!(
        stdout.contains("warning: domain clouds: the model was trained on 32x32 images, these are 16x16"),
        "{stdout}"
    );
    assert!(stdout.contains("invert/clouds") && stdout.contains(" 72\n"), "{stdout}");
    assert!(stdout.contains("decode/clouds") && stdout.contains(" 40\n"), "{stdout}");
    assert!(stdout.contains("total") && stdout.contains(" 112\n"), "{stdout}");
    assert!(stdout.contains("memory estimate ~"), "{stdout}");
    // The time estimate: measured UNet and refinement rates, extrapolated to the run.
    let line = stdout.lines().find(|l| l.starts_with("time estimate ~")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" thread(s)"), "{line}");
    let domain = stdout.lines().find(|l| l.starts_with("  clouds: ~")).unwrap_or_else(|| panic!("{stdout}"));
    let per_map: f64 = domain.split(": ").nth(2).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(per_map > 0.0 && per_map < 10.0, "{domain}");
    assert!(domain.contains("refinement ~"), "{domain}");
    assert!(!out.exists());
}

#[test]
fn config_errors_name_the_key_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cases: Vec<(String, &str)> = vec![
        ("samples = 3\n".into(), "samples"),
        ("[prior]\nkind = \"full\"\n".into(), "prior.kind"),
        ("channels = 1\n".into(), "1 channel(s) but the model takes 3"),
        ("[[domain]]\nname = \"clouds\"\ninputs = [\"x.fits\"]\n".into(), "two domains are named 'clouds'"),
        ("[[domain]]\nname = \"b\"\ninputs = [\"missing.fits\"]\n".into(), "missing.fits"),
        ("[[domain]]\nname = \"b\"\ninputs = [\"small.toml\"]\n".into(), "small.toml"),
        ("softening = 2.0\n".into(), "domain[0].softening: applies to the asinh transform only"),
    ];
    for (extra, needle) in cases {
        let config = small_config(dir.path(), &extra);
        let r = expanse(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(needle), "{extra}\n→ {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists(), "{extra}: the run folder was created");
    }
    for (from, to, needle) in [
        ("steps = 10", "steps = 10\nt0 = 2000", "t0 must be in 1..999"),
        ("size = 32", "size = 30", "divisible by 4"),
        ("max_maps = 8", "max_maps = 5", "sampling.k = 5 needs at least 6 maps"),
        ("batch = 2", "batch = 2\ndevice = \"gpu\"", "model.device"),
        ("seed = 3", "seed = 3\nthreads = 0", "run.threads"),
        ("transform = \"log10\"", "transform = \"log\"", "domain[0].transform: 'log' is ambiguous: write log10"),
        ("batch = 2", "batch = 2\ndevice = \"cuda\"", "without CUDA support"),
    ] {
        if cfg!(feature = "cuda") && to.contains("cuda") {
            continue;
        }
        let config = small_config(dir.path(), "");
        replace_in(&config, from, to);
        let r = expanse(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.code() == Some(1) && err.contains(needle), "{to}: {err}");
        assert!(!out.exists(), "{to}: the run folder was created");
    }
    let config = small_config(dir.path(), "");
    let r = expanse(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "0"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("--threads") && err.contains("at least 1"), "{err}");
    assert!(!out.exists());
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap().replace(from, to);
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_shipped_config_is_valid_and_the_local_ones_plan() {
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        // Benchmark configs (with [benchmark]): every variant's run config.
        let configs = if std::fs::read_to_string(&path).unwrap().contains("[benchmark]") {
            let bench = expanse::fidelity::FidelityConfig::read(&path).unwrap_or_else(|e| panic!("{e}"));
            bench.variants.iter().map(|v| v.apply(&bench.base, 0).unwrap()).collect()
        } else {
            vec![expanse::pipeline::RunConfig::read(&path).unwrap_or_else(|e| panic!("{e}"))]
        };
        for config in configs {
            if config.model.path.exists() {
                let plan = expanse::pipeline::Plan::new(config, &path).unwrap_or_else(|e| panic!("{e}"));
                assert!(plan.domains.iter().all(|d| d.images > plan.config.sampling.k));
            }
        }
    }
}

#[test]
fn a_refined_run_records_the_refinement_and_does_not_depend_on_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "\n[refinement]\niterations = 15\n");
    let out = dir.path().join("run");
    let stdout = ok(&["--threads", "2", "run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(stdout.contains("| clouds | 8 |"), "{stdout}");
    let counts = &manifest(&out)["stages"]["decode/clouds"]["counts"];
    let (before, after) =
        (counts["refinement_loss_before"].as_f64().unwrap(), counts["refinement_loss_after"].as_f64().unwrap());
    assert!(after < 0.5 * before, "refinement loss {before} -> {after}");
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.contains("decode/clouds: refined 4 maps on"), "{log}");
    let prov = expanse::io::read_provenance(&out.join("samples/clouds.fits")).unwrap().unwrap();
    let record = &prov.records["refinement"];
    assert_eq!(record["options"]["iterations"], 15);
    assert_eq!(record["loss_after"].as_array().unwrap().len(), 4);
    // One thread gives the same maps and report (the files' provenance records the thread count).
    let one = dir.path().join("one-thread");
    ok(&["--threads", "1", "run", config.to_str().unwrap(), "--out", one.to_str().unwrap()]);
    let (h1, h2) = (hashes(&one), hashes(&out));
    for f in ["samples/clouds.npy", "report/clouds/report.json"] {
        assert_eq!(h1[Path::new(f)], h2[Path::new(f)], "{f}");
    }
}

#[test]
fn init_writes_a_commented_config_that_plans_and_run_takes_count_and_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mine.toml");
    let maps = sample("clouds_64.fits");
    let printed = ok(&["init", maps.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(printed.contains("32 map(s) of 64x64, transform log10"), "{printed}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("# expanse run config written by `expanse init`"), "{text}");
    // Every key but the domain's is at the library's default.
    let config = expanse::pipeline::RunConfig::read(&out).unwrap();
    let defaults: expanse::pipeline::RunConfig =
        toml::from_str(&format!("[model]\npath = \"{}\"\n", config.model.path.display())).unwrap();
    assert_eq!(config.inversion, defaults.inversion);
    assert_eq!(config.prior, defaults.prior);
    assert_eq!(config.sampling, defaults.sampling);
    assert_eq!(config.refinement, defaults.refinement);
    assert_eq!(config.validation, defaults.validation);
    assert_eq!((config.run.seed, &config.run.formats), (defaults.run.seed, &defaults.run.formats));
    assert_eq!(config.domains[0].name, "clouds_64");
    assert_eq!(config.domains[0].inputs, vec![maps.clone()]);
    let plan = ok(&["run", out.to_str().unwrap(), "--dry-run"]);
    assert!(plan.contains("16 synthetic map(s) per domain") && plan.contains("seed 0"), "{plan}");
    // The command line's count and seed win over the config's.
    let plan = ok(&["run", out.to_str().unwrap(), "--dry-run", "--count", "3", "--seed", "7"]);
    assert!(plan.contains("3 synthetic map(s) per domain") && plan.contains("seed 7"), "{plan}");

    // An existing file is kept; a missing input names itself and writes nothing.
    let r = expanse(&["init", maps.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    let other = dir.path().join("other.toml");
    let missing = dir.path().join("nowhere.fits");
    let r = expanse(&["init", missing.to_str().unwrap(), "--out", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("nowhere.fits"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "init left files behind");
}

#[test]
fn synthetic_files_keep_the_pixel_scale_carry_units_and_a_date_and_name_the_domains_inputs() {
    use expanse::io::{self, fits};
    let dir = tempfile::tempdir().unwrap();
    // The shipped clouds with a sky WCS: 0.01 deg pixels.
    let maps = io::read_maps(&sample("clouds_64.fits"), &io::Selection::default()).unwrap();
    let stack = io::stack(&maps).unwrap();
    let provenance = io::Provenance::new("test", &maps);
    let card = |k: &str, v: fits::CardValue| fits::format_card(k, v, "");
    let input = dir.path().join("clouds_wcs.fits");
    io::write_stack(
        &input,
        &io::OutputStack {
            data: stack.view().into_dyn(),
            mask: None,
            units: Some("cm-2".into()),
            provenance: &provenance,
            fits_cards: vec![
                card("CTYPE1", fits::CardValue::Str("RA---TAN".into())),
                card("CTYPE2", fits::CardValue::Str("DEC--TAN".into())),
                card("CRVAL1", fits::CardValue::Float(83.8)),
                card("CRVAL2", fits::CardValue::Float(-5.4)),
                card("CRPIX1", fits::CardValue::Float(32.5)),
                card("CRPIX2", fits::CardValue::Float(32.5)),
                card("CDELT1", fits::CardValue::Float(-0.01)),
                card("CDELT2", fits::CardValue::Float(0.01)),
                card("CUNIT1", fits::CardValue::Str("deg".into())),
                card("CUNIT2", fits::CardValue::Str("deg".into())),
            ],
        },
    )
    .unwrap();
    let config = small_config(dir.path(), "");
    replace_in(&config, &sample("clouds_64.fits").display().to_string(), &input.display().to_string());
    replace_in(&config, "formats = [\"fits\", \"npy\"]", "formats = [\"fits\", \"h5\"]");
    let out = dir.path().join("run");
    ok(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let synthetic = io::read_maps(&out.join("samples/clouds.fits"), &io::Selection::default()).unwrap();
    let cards = &synthetic[0].source.cards;
    let value = |k: &str| fits::card_value(cards, k);
    // 64² resampled to 32²: pixels twice as large; no position on the sky.
    let cdelt1: f64 = value("CDELT1").unwrap().trim().parse().unwrap();
    assert!((cdelt1 + 0.02).abs() < 1e-12, "{cards:?}");
    assert_eq!(value("CUNIT2").unwrap().trim().trim_matches('\'').trim(), "deg");
    assert!(value("CRVAL1").is_none() && value("CTYPE1").is_none() && value("CRPIX1").is_none(), "{cards:?}");
    let date = value("DATE").unwrap();
    assert!(date.trim().trim_matches('\'').starts_with("20") && date.contains('T'), "{date}");
    let history: Vec<&String> = cards.iter().filter(|c| c.starts_with("HISTORY")).collect();
    assert!(history.iter().any(|c| c.contains("domain input:")), "{history:?}");
    assert!(!history.iter().any(|c| c.contains("source: ")), "{history:?}");
    // HDF5: units always there (empty in model space, where there are none).
    let h5 = hdf5::File::open(out.join("samples/clouds.h5")).unwrap();
    let units: hdf5::types::VarLenUnicode = h5.dataset("maps").unwrap().attr("units").unwrap().read_scalar().unwrap();
    assert_eq!(units.as_str(), "cm-2");
    let stack_file = hdf5::File::open(out.join("stacks/clouds.h5")).unwrap();
    let units: hdf5::types::VarLenUnicode =
        stack_file.dataset("maps").unwrap().attr("units").unwrap().read_scalar().unwrap();
    assert_eq!(units.as_str(), "");
}

#[test]
fn a_latent_cache_spares_a_new_run_folder_the_inversion_and_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), "");
    let cache = dir.path().join("cache");
    let (first, second, plain) = (dir.path().join("first"), dir.path().join("second"), dir.path().join("plain"));
    let c = config.to_str().unwrap();
    ok(&["run", c, "--out", first.to_str().unwrap(), "--latent-cache", cache.to_str().unwrap()]);
    let evaluations = |out: &Path| manifest(out)["stages"]["invert/clouds"]["counts"]["unet_evaluations"].clone();
    assert_eq!(evaluations(&first), 8 * 9);
    // Another folder and another seed, the cache named by the environment: nothing is inverted.
    let out = Command::new(env!("CARGO_BIN_EXE_expanse"))
        .args(["run", c, "--out", second.to_str().unwrap(), "--seed", "11"])
        .env("EXPANSE_LATENT_CACHE", &cache)
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = manifest(&second);
    assert_eq!(evaluations(&second), 0);
    assert_eq!(m["stages"]["invert/clouds"]["counts"]["from_latent_cache"], true);
    // The files are those of a run of that seed without the cache.
    ok(&["run", c, "--out", plain.to_str().unwrap(), "--seed", "11"]);
    assert_eq!(hashes(&second), hashes(&plain));
    // A cache that is not a folder is refused before anything is written.
    let bad = dir.path().join("bad");
    let out = expanse(&["run", c, "--out", bad.to_str().unwrap(), "--latent-cache", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("small.toml: not a folder"), "{err}");
    assert!(!bad.exists());
}
