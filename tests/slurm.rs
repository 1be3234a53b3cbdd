//! A run in Slurm job arrays gives the files of a single-machine run, value for value: the parts
//! run by hand (no Slurm needed), then the quickstart submitted with `expanse slurm --submit` to a
//! real one-node Slurm started by tools/slurm_local.sh. Where Slurm cannot start, that test says
//! so loudly; with EXPANSE_REQUIRE_SLURM=1 (as .ci/run sets) it fails instead.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{manifest, root, sample};

/// A small run: 8 cloud maps in 4 batches of 2, a 10-point grid, 4 samples in 2 batches.
fn small_config(dir: &Path, seed: u64) -> PathBuf {
    let text = format!(
        "[run]\nname = \"small\"\nseed = {seed}\nformats = [\"fits\", \"npy\"]\n\n[model]\npath = \"{}\"\nbatch = 2\n\n\
         [inversion]\nsteps = 10\n\n[sampling]\ncount = 4\nk = 5\nbudget = 50000\n\n[[domain]]\nname = \"clouds\"\n\
         inputs = [\"{}\"]\nmax_maps = 8\ntransform = \"log10\"\nsize = 32\n",
        root().join("data/models/expanse-natural-32").display(),
        sample("clouds_64.fits").display(),
    );
    let path = dir.join(format!("small_{seed}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// SHA-256 of every file of a run folder but the manifest, the log and the Slurm scripts.
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            if p.is_dir() {
                if rel != Path::new("slurm") {
                    walk(&p, base, out);
                }
            } else if !matches!(rel.to_str().unwrap(), "manifest.json" | "run.log" | ".lock") {
                use sha2::Digest;
                out.insert(rel, format!("{:x}", sha2::Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn fails(args: &[&str], cause: &str) -> String {
    let out = common::expanse(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expanse {args:?} should fail");
    assert!(err.contains(cause), "expanse {args:?}: expected '{cause}' in:\n{err}");
    err
}

#[test]
fn the_parts_of_a_run_give_the_files_of_a_single_run_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(tmp.path(), 3);
    let c = config.to_str().unwrap();
    let plain = tmp.path().join("plain");
    common::ok(&["run", c, "--out", plain.to_str().unwrap()]);

    let split = tmp.path().join("split");
    let s = split.to_str().unwrap();
    // The scripts: five jobs, arrays of 2, the binary and the folders by absolute path.
    let printed = common::ok(&[
        "slurm",
        c,
        "--out",
        s,
        "--shards",
        "2",
        "--time",
        "01:00:00",
        "--mem",
        "4G",
        "--sbatch-arg=--qos=long",
    ]);
    assert!(printed.contains("--dependency=afterok:$job4"), "{printed}");
    let invert = std::fs::read_to_string(split.join("slurm/2_invert.sbatch")).unwrap();
    for want in [
        "#SBATCH --array=0-1",
        "#SBATCH --requeue",
        "#SBATCH --time=01:00:00",
        "#SBATCH --mem=4G",
        "#SBATCH --qos=long",
        "--stage invert --shard \"$SLURM_ARRAY_TASK_ID/2\"",
    ] {
        assert!(invert.contains(want), "{want} not in\n{invert}");
    }
    assert!(
        invert.contains(env!("CARGO_BIN_EXE_expanse")) && invert.contains(&format!("--out {s} --resume")),
        "{invert}"
    );
    assert!(std::fs::read_to_string(split.join("slurm/3_fit.sbatch")).unwrap().contains("--stage fit --shards 2"));

    let part = |args: &[&str]| {
        let mut v = vec!["run", c, "--out", s, "--resume"];
        v.extend_from_slice(args);
        common::ok(&v)
    };
    // A shard before the run has started, and N larger than the batches.
    fails(&["run", c, "--out", s, "--resume", "--stage", "invert", "--shard", "0/2"], "--stage ingest");
    part(&["--stage", "ingest"]);
    // Shards plan from the ingested stacks (their headers), not by normalizing every input
    // again: the same domains.
    let read = || expanse::pipeline::RunConfig::read(&config).unwrap();
    let (whole, ingested) = (
        expanse::pipeline::Plan::new(read(), &config).unwrap(),
        expanse::pipeline::Plan::of_ingested(read(), &config, &split).unwrap(),
    );
    let facts = |p: &expanse::pipeline::Plan| -> Vec<_> {
        p.domains.iter().map(|d| (d.name.clone(), d.images, d.shape, d.units.clone(), d.transform.clone())).collect()
    };
    assert_eq!(facts(&whole), facts(&ingested));
    assert_eq!(whole.grid, ingested.grid);
    fails(
        &["run", c, "--out", s, "--resume", "--stage", "invert", "--shard", "0/5"],
        "stage invert: 5 shards for 4 batches",
    );
    fails(&["run", c, "--out", s, "--resume", "--stage", "invert"], "--shard I/N");
    // Shards in any order; the merge refuses while one is missing, naming the stage and shard.
    part(&["--stage", "invert", "--shard", "1/2"]);
    fails(
        &["run", c, "--out", s, "--resume", "--stage", "fit", "--shards", "2"],
        "stage invert: shard 0/2 has not finished",
    );
    assert!(!split.join("latents/clouds.h5").exists());
    // A requeued shard keeps the batches it finished.
    part(&["--stage", "invert", "--shard", "1/2"]);
    assert!(split.join("shards/invert_1_of_2.json").is_file());
    part(&["--stage", "invert", "--shard", "0/2"]);
    // A changed batch is caught at merge.
    let batch = split.join("latents/clouds.partial/batch_00000.npy");
    let kept = std::fs::read(&batch).unwrap();
    let mut bad = kept.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(&batch, &bad).unwrap();
    fails(
        &["run", c, "--out", s, "--resume", "--stage", "fit", "--shards", "2"],
        "shard 0/2's batch is missing or changed",
    );
    std::fs::write(&batch, &kept).unwrap();
    part(&["--stage", "fit", "--shards", "2"]);
    assert!(!split.join("shards").exists(), "shard records move into the manifest");
    // A shard refuses a folder of another config, saying how to bring the folder to it.
    let other = small_config(tmp.path(), 4);
    let o = other.to_str().unwrap();
    let err = fails(
        &["run", o, "--out", s, "--resume", "--stage", "decode", "--shard", "0/2"],
        "another config, inputs or model (differs at run.seed)",
    );
    assert!(err.contains("--resume --stage ingest"), "{err}");
    fails(
        &["slurm", c, "--out", tmp.path().join("new").to_str().unwrap(), "--shards", "3"],
        "stage decode has only 2 batch(es)",
    );
    assert!(!tmp.path().join("new").exists());
    part(&["--stage", "decode", "--shard", "1/2"]);
    part(&["--stage", "decode", "--shard", "0/2"]);
    let done = part(&["--stage", "validate", "--shards", "2"]);
    assert!(done.contains("# Run 'small'"), "{done}");

    assert_eq!(hashes(&split), hashes(&plain));
    let m = manifest(&split);
    assert_eq!(m["complete"], true);
    for stage in ["invert", "decode"] {
        let shards = m["shards"][stage].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(
            shards.iter().map(|r| r["batches"].as_array().unwrap().len()).sum::<usize>(),
            if stage == "invert" { 4 } else { 2 }
        );
    }
    // The manifests agree on everything but times, hosts and the shard records.
    let (a, b) = (manifest(&plain), m);
    assert_eq!(a["seeds"], b["seeds"]);
    assert_eq!(a["config_sha256"], b["config_sha256"]);
    for (name, rec) in a["stages"].as_object().unwrap() {
        assert_eq!(rec["outputs"], b["stages"][name]["outputs"], "{name}");
    }

    // A finished run has nothing to submit; another seed submits only the jobs from sampling on,
    // with the cores given to every job and run, and gives the files of a plain run of that seed.
    fails(&["slurm", c, "--out", s, "--shards", "2"], "the run is complete");
    let printed = common::ok(&["slurm", o, "--out", s, "--shards", "2", "--cpus-per-task", "3"]);
    assert!(printed.contains("wrote 3 job scripts"), "{printed}");
    assert!(!printed.contains("1_ingest") && !printed.contains("2_invert") && printed.contains("3_fit"), "{printed}");
    let fit = std::fs::read_to_string(split.join("slurm/3_fit.sbatch")).unwrap();
    assert!(fit.contains("#SBATCH --cpus-per-task=3") && fit.contains("--stage fit --shards 2 --threads 3"), "{fit}");
    assert!(!split.join("slurm/1_ingest.sbatch").exists());
    let part_o = |args: &[&str]| {
        let mut v = vec!["run", o, "--out", s, "--resume"];
        v.extend_from_slice(args);
        common::ok(&v)
    };
    part_o(&["--stage", "fit", "--shards", "2"]);
    part_o(&["--stage", "decode", "--shard", "0/2"]);
    part_o(&["--stage", "decode", "--shard", "1/2"]);
    part_o(&["--stage", "validate", "--shards", "2"]);
    let plain_o = tmp.path().join("plain_o");
    common::ok(&["run", o, "--out", plain_o.to_str().unwrap()]);
    assert_eq!(hashes(&split), hashes(&plain_o));
    assert_eq!(manifest(&split)["config_history"][0]["changes"], serde_json::json!(["run.seed"]));
}

/// Stops the local cluster when the test ends, also on failure.
struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(root().join("tools/slurm_local.sh")).arg("stop").arg(&self.0).output();
    }
}

#[test]
fn a_real_slurm_runs_the_quickstart_in_two_shards_like_one_machine() {
    let required = std::env::var("EXPANSE_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster");
    let start =
        Command::new("bash").arg(root().join("tools/slurm_local.sh")).arg("start").arg(&cluster).output().unwrap();
    let _guard = Cluster(cluster.clone());
    if !start.status.success() {
        let why = String::from_utf8_lossy(&start.stderr);
        let msg = format!(
            "\n\n*** SLURM TEST NOT RUN: a local Slurm could not start ***\n{why}\n(.ci/run installs \
            slurmctld, slurmd, slurm-client and munge and requires this test)\n"
        );
        assert!(!required, "{msg}");
        eprintln!("{msg}");
        return;
    }
    let conf = cluster.join("slurm.conf");
    let config = root().join("configs/quickstart.toml");
    let plain = tmp.path().join("plain");
    common::ok(&["run", config.to_str().unwrap(), "--out", plain.to_str().unwrap()]);

    let run = tmp.path().join("slurm run");
    let out = Command::new(env!("CARGO_BIN_EXE_expanse"))
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .args([
            "slurm",
            config.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--shards",
            "2",
            "--mem",
            "2G",
            "--submit",
        ])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "expanse slurm --submit: {}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("validate: job "), "{text}");
    let jobs = common::json(run.join("slurm/jobs.json"));

    let logs = || -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(run.join("slurm/logs")).into_iter().flatten() {
            let p = e.unwrap().path();
            all.push_str(&format!("--- {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default()));
        }
        all
    };
    // Wait until no job is left in the queue; a job whose dependency failed never runs, so stop
    // at once and show the logs instead of waiting out the limit.
    let t = Instant::now();
    loop {
        let q = Command::new("squeue").args(["-h", "-o", "%i %T %r"]).env("SLURM_CONF", &conf).output().unwrap();
        let queue = String::from_utf8_lossy(&q.stdout).to_string();
        if queue.trim().is_empty() {
            break;
        }
        assert!(
            !queue.contains("DependencyNeverSatisfied"),
            "a job failed, the rest can never run:\n{queue}\n{}",
            logs()
        );
        assert!(t.elapsed() < Duration::from_secs(900), "jobs still queued after 15 minutes:\n{queue}\n{}", logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = manifest(&run);
    assert_eq!(m["complete"], true, "the Slurm run did not finish:\n{}", logs());
    assert_eq!(hashes(&run), hashes(&plain), "the Slurm run differs from the plain run:\n{}", logs());
    // Every shard records the array job and task that ran it.
    for (stage, key) in [("invert", "invert"), ("decode", "decode")] {
        let shards = m["shards"][stage].as_array().unwrap();
        let tasks: Vec<&str> = shards.iter().map(|r| r["job"]["SLURM_ARRAY_TASK_ID"].as_str().unwrap()).collect();
        assert_eq!(tasks, vec!["0", "1"], "{stage}");
        for r in shards {
            assert_eq!(r["job"]["SLURM_ARRAY_JOB_ID"].as_str(), jobs[key].as_str(), "{stage}: {r}");
        }
    }
}
