//! The corruption suite: deterministic corruptions (byte flips, truncations, printable bytes over
//! the header, zeroed runs, a wrong magic) of a small valid file of every format expanse reads,
//! each run through the command that reads it. Every case must end in success or one clean error:
//! no panic, a non-zero exit code, nothing written and no temporary file left, within a time limit.
//! A failing case prints its format, seed and corruption so that it can be kept as a fixture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{fixtures, root, sample, SplitMix64};
use ndarray::Array4;

/// The seed of the case that runs the valid file unchanged, which must succeed.
const VALID: u64 = u64::MAX;

/// Seconds a case may take before it counts as a hang.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// The suite's only source of randomness, seeded per case.
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One corruption of `bytes`, chosen by the case's seed; returns the bytes and what was done.
fn corrupt(bytes: &[u8], seed: u64) -> (Vec<u8>, String) {
    let mut rng = Rng(SplitMix64(seed));
    let mut b = bytes.to_vec();
    let n = b.len();
    match seed % 5 {
        0 => {
            let k = 1 + rng.below(8);
            let mut at = Vec::new();
            for _ in 0..k {
                // Half the flips land in the first 4 kB, where the headers are.
                let i = if rng.below(2) == 0 { rng.below(n.min(4096)) } else { rng.below(n) };
                b[i] ^= 1 + rng.below(255) as u8;
                at.push(i);
            }
            (b, format!("flipped bytes at {at:?}"))
        }
        1 => {
            let len = if rng.below(2) == 0 { rng.below(n.min(4096)) } else { rng.below(n) };
            b.truncate(len);
            (b, format!("truncated to {len} of {n} bytes"))
        }
        2 => {
            let head = n.min(5760);
            let start = rng.below(head);
            let len = 1 + rng.below(head - start);
            for x in &mut b[start..start + len] {
                *x = b' ' + rng.below(95) as u8;
            }
            (b, format!("printable bytes over {start}..{}", start + len))
        }
        3 => {
            let start = rng.below(n);
            let len = (1 + rng.below(256)).min(n - start);
            b[start..start + len].fill(0);
            (b, format!("zeroed {start}..{}", start + len))
        }
        _ => {
            let len = n.min(8);
            for x in &mut b[..len] {
                *x = rng.next() as u8;
            }
            (b, "wrong magic (first 8 bytes)".to_string())
        }
    }
}

/// One format: a valid folder of inputs, the file in it to corrupt, and the command that reads it
/// (`{in}` is the input folder, `{out}` the output folder, which must stay empty on failure).
struct Format {
    name: &'static str,
    folder: PathBuf,
    file: &'static str,
    args: Vec<String>,
    cases: u64,
}

fn expanse_out(args: &[&str]) {
    let out = common::expanse(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        } else if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &to.join(entry.file_name()));
        }
    }
}

/// The valid inputs of every format, made once in `base`.
fn formats(base: &Path) -> Vec<Format> {
    let s = |x: &str| x.to_string();
    let maps = base.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let clouds = sample("clouds_64.fits");
    let clouds = clouds.to_str().unwrap();
    for ext in ["fits", "h5", "npy"] {
        let out = maps.join(format!("maps.{ext}"));
        expanse_out(&["ingest", clouds, "--raw", "--max-maps", "2", "--out", out.to_str().unwrap()]);
    }
    // HDF5 written by h5py (groups, chunked and gzip-compressed datasets: the kind of file of
    // issue 31's panic), read at its compressed cube.
    let h5py = base.join("h5py");
    std::fs::create_dir_all(&h5py).unwrap();
    std::fs::copy(fixtures("io").join("hdf5_sim.h5"), h5py.join("sim.h5")).unwrap();

    let model = base.join("model");
    copy_folder(&root().join("data/models/expanse-natural-32"), &model);
    let input = base.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let x = Array4::<f32>::from_shape_fn((1, 3, 32, 32), |(_, c, i, j)| ((i * 7 + j * 3 + c) % 11) as f32 / 5.5 - 1.0);
    ndarray_npy::write_npy(input.join("x.npy"), &x).unwrap();
    // Latents as `expanse invert` writes them (.npy and its grid record), of 12 maps at 32².
    let stack = input.join("maps.h5");
    let stack = stack.to_str().unwrap();
    expanse_out(&[
        "ingest",
        clouds,
        "--transform",
        "log10",
        "--size",
        "32",
        "--channels",
        "3",
        "--max-maps",
        "12",
        "--out",
        stack,
    ]);
    let model_arg = model.to_str().unwrap();
    let latents = input.join("latents.npy");
    let latents_arg = latents.to_str().unwrap();
    expanse_out(&["invert", "--model", model_arg, "--input", stack, "--steps", "3", "--out", latents_arg]);
    let prior = base.join("prior");
    std::fs::create_dir_all(&prior).unwrap();
    expanse_out(&[
        "fit",
        "--latents",
        latents_arg,
        "--out",
        prior.join("prior.h5").to_str().unwrap(),
        "--kind",
        "scalar",
    ]);

    let config = base.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let text = format!(
        "[run]\nname = \"c\"\n\n[model]\npath = \"{}\"\n\n[sampling]\ncount = 2\n\n[[domain]]\nname = \"clouds\"\n\
         inputs = [\"{clouds}\"]\ntransform = \"log10\"\nsize = 32\nmax_maps = 12\n",
        model.display()
    );
    std::fs::write(config.join("run.toml"), text).unwrap();
    // A finished run folder, resumed with its manifest corrupted.
    let run_folder = base.join("run");
    expanse_out(&["run", config.join("run.toml").to_str().unwrap(), "--out", run_folder.to_str().unwrap()]);
    // A run inverted by two shards (as a Slurm job array does): the fit stage assembles their
    // per-batch checkpoints.
    let sharded = base.join("sharded");
    let cfg = config.join("run.toml");
    let (cfg, sharded_arg) = (cfg.to_str().unwrap(), sharded.to_str().unwrap());
    expanse_out(&["run", cfg, "--out", sharded_arg, "--stage", "ingest"]);
    for shard in ["0/2", "1/2"] {
        expanse_out(&["run", cfg, "--out", sharded_arg, "--resume", "--stage", "invert", "--shard", shard]);
    }

    let adm = fixtures("adm").join("new_order");
    let ddpm = fixtures("ddpm_original").join("small");
    let unet_eval = |m: &str, x: &str| {
        vec![
            s("unet-eval"),
            s("--model"),
            s(m),
            s("--input"),
            s(x),
            s("--timestep"),
            s("10"),
            s("--out"),
            s("{out}/y.npy"),
        ]
    };
    let ingest = |f: &str| vec![s("ingest"), format!("{{in}}/{f}"), s("--raw"), s("--out"), s("{out}/maps.npy")];
    let x = input.join("x.npy").display().to_string();
    let sample = |prior: &str, latents: &str| {
        let args = ["sample", "--model", model_arg, "--prior", prior, "--latents", latents, "--count", "1"];
        let limits = ["--budget", "4", "--tests", "norm", "--out", "{out}/maps.npy"];
        args.iter().chain(&limits).map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let assemble_shards: Vec<String> =
        ["run", cfg, "--out", "{in}", "--resume", "--stage", "fit", "--shards", "2"].map(String::from).into();
    vec![
        Format { name: "FITS", folder: maps.clone(), file: "maps.fits", args: ingest("maps.fits"), cases: 60 },
        Format { name: "HDF5", folder: maps.clone(), file: "maps.h5", args: ingest("maps.h5"), cases: 60 },
        Format {
            name: "HDF5 (h5py, gzip)",
            folder: h5py,
            file: "sim.h5",
            args: [ingest("sim.h5"), vec![s("--dataset"), s("compressed/gzip_i16_cube")]].concat(),
            cases: 60,
        },
        Format { name: "NPY", folder: maps, file: "maps.npy", args: ingest("maps.npy"), cases: 60 },
        Format {
            name: "diffusers config.json",
            folder: model.clone(),
            file: "config.json",
            args: unet_eval("{in}", &x),
            cases: 25,
        },
        Format {
            name: "scheduler_config.json",
            folder: model.clone(),
            file: "scheduler_config.json",
            args: unet_eval("{in}", &x),
            cases: 15,
        },
        Format {
            name: "safetensors",
            folder: model.clone(),
            file: "diffusion_pytorch_model.safetensors",
            args: unet_eval("{in}", &x),
            cases: 30,
        },
        Format {
            name: "ADM .pt",
            folder: adm.clone(),
            file: "model.pt",
            args: unet_eval("{in}", &format!("{}/input.npy", adm.display())),
            cases: 30,
        },
        Format {
            name: "adm.json",
            folder: adm.clone(),
            file: "adm.json",
            args: unet_eval("{in}", &format!("{}/input.npy", adm.display())),
            cases: 15,
        },
        Format {
            name: "DDPM .ckpt",
            folder: ddpm.clone(),
            file: "model.ckpt",
            args: unet_eval("{in}", &format!("{}/input.npy", ddpm.display())),
            cases: 30,
        },
        Format {
            name: "ddpm.json",
            folder: ddpm.clone(),
            file: "ddpm.json",
            args: unet_eval("{in}", &format!("{}/input.npy", ddpm.display())),
            cases: 15,
        },
        Format {
            name: "run manifest (resume)",
            folder: run_folder,
            file: "manifest.json",
            args: vec![s("run"), config.join("run.toml").display().to_string(), s("--out"), s("{in}"), s("--resume")],
            cases: 20,
        },
        Format {
            name: "batch checkpoint",
            folder: sharded.clone(),
            file: "latents/clouds.partial/batch_00000.npy",
            args: assemble_shards.clone(),
            cases: 20,
        },
        Format {
            name: "checkpoint key",
            folder: sharded.clone(),
            file: "latents/clouds.partial/key.txt",
            args: assemble_shards.clone(),
            cases: 10,
        },
        Format {
            name: "TOML run config",
            folder: config,
            file: "run.toml",
            args: vec![s("run"), s("{in}/run.toml"), s("--dry-run"), s("--out"), s("{out}/run")],
            cases: 40,
        },
        Format {
            name: "latents",
            folder: input.clone(),
            file: "latents.npy",
            args: vec![s("fit"), s("--latents"), s("{in}/latents.npy"), s("--out"), s("{out}/prior.h5")],
            cases: 40,
        },
        Format {
            name: "latents record (.json)",
            folder: input.clone(),
            file: "latents.npy.json",
            args: sample(&prior.join("prior.h5").display().to_string(), "{in}/latents.npy"),
            cases: 20,
        },
        Format {
            name: "prior",
            folder: prior,
            file: "prior.h5",
            args: sample("{in}/prior.h5", &input.join("latents.npy").display().to_string()),
            cases: 20,
        },
    ]
}

/// Runs one case: `Ok(true)` when the command succeeded, `Ok(false)` for one clean error, `Err`
/// says what went wrong.
fn run_case(f: &Format, seed: u64, dir: &Path) -> Result<bool, String> {
    let input = dir.join("in");
    let out = dir.join("out");
    copy_folder(&f.folder, &input);
    std::fs::create_dir_all(&out).unwrap();
    let valid = std::fs::read(f.folder.join(f.file)).unwrap();
    let (bytes, what) = match seed {
        VALID => (valid, "unchanged".to_string()),
        _ => corrupt(&valid, seed),
    };
    std::fs::write(input.join(f.file), &bytes).unwrap();
    let args: Vec<String> = f
        .args
        .iter()
        .map(|a| a.replace("{in}", input.to_str().unwrap()).replace("{out}", out.to_str().unwrap()))
        .collect();
    let case = format!("{} seed {seed} ({what})", f.name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_expanse"))
        .args(&args)
        .arg("--threads")
        .arg("1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().ok();
            return Err(format!("{case}: still running after {TIME_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    if stderr.contains("panicked") || status.code() == Some(101) || status.code().is_none() {
        return Err(format!("{case}: panicked or killed ({status}): {stderr}"));
    }
    // The command's own temporary files (`.NAME.tmpPID-N.EXT`) must be gone wherever it wrote.
    if let Some(tmp) = walk(&input).iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp")))
    {
        return Err(format!("{case}: left a temporary file {}", tmp.display()));
    }
    let left: Vec<String> =
        walk(&out).into_iter().map(|p| p.strip_prefix(&out).unwrap_or(&p).display().to_string()).collect();
    if status.success() {
        if let Some(tmp) = left.iter().find(|p| p.contains(".tmp") || p.contains(".partial")) {
            return Err(format!("{case}: succeeded but left a temporary file {tmp}"));
        }
    } else {
        if !left.is_empty() {
            return Err(format!("{case}: failed but wrote {left:?}"));
        }
        if stderr.trim().is_empty() {
            return Err(format!("{case}: failed without a message"));
        }
    }
    std::fs::remove_dir_all(dir).ok();
    Ok(status.success())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                found.extend(walk(&p));
                found.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn every_corrupted_input_ends_in_success_or_one_clean_error() {
    let tmp = tempfile::tempdir().unwrap();
    let formats = formats(&tmp.path().join("base"));
    // Each command reads its valid file: otherwise every corruption would be a "clean error".
    for (i, f) in formats.iter().enumerate() {
        let read = run_case(f, VALID, &tmp.path().join(format!("valid{i}")));
        assert_eq!(read, Ok(true), "{}: the valid file must be read", f.name);
    }
    let cases: Vec<(usize, u64)> =
        formats.iter().enumerate().flat_map(|(i, f)| (0..f.cases).map(move |s| (i, s))).collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let outcomes = Mutex::new(vec![[0usize; 2]; formats.len()]);
    std::thread::scope(|scope| {
        for _ in 0..std::thread::available_parallelism().map_or(2, |n| n.get()).min(4) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, seed)) = cases.get(k) else { break };
                let dir = tmp.path().join(format!("case{k}"));
                match run_case(&formats[i], seed, &dir) {
                    Ok(read) => outcomes.lock().unwrap()[i][usize::from(read)] += 1,
                    Err(e) => failures.lock().unwrap().push(e),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    let outcomes = outcomes.into_inner().unwrap();
    for (f, [errors, read]) in formats.iter().zip(&outcomes) {
        eprintln!("{:<24} {:>3} cases: {read:>3} read anyway, {errors:>3} clean errors", f.name, f.cases);
    }
    assert_eq!(outcomes.iter().flatten().sum::<usize>(), cases.len());
}
