//! The paper's model families: guided-diffusion ADM checkpoints (`adm.json` + `*.pt`) against
//! guided-diffusion's own `UNetModel` (tools/make_adm_fixtures.py), and original DDPM checkpoints
//! (`ddpm.json` + `*.ckpt`) against ermongroup/ddim's `Model` through diffusers' key map
//! (tools/make_ddpm_original_fixtures.py). Random weights in every tensor; outputs at t = 0, 500
//! and 999; DDIM on the paper's grid against a float64 reference.

mod common;

use common::{fixtures, json, load_err, max_abs_diff, npy, npy4, sample, tensor, to_array, usize_of};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use expanse::diffusion::{Ddim, NoiseSchedule};
use expanse::model::{AdmConfig, AdmUNet, Ddpm, ModelFormat, OriginalDdpmConfig, UNet2DConfig};
use indicatif::ProgressBar;
use ndarray::{Array1, Array4};
use serde_json::Value;

/// Model folders of a fixture family (every subfolder holding `marker`).
fn folders(family: &str, marker: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures(family))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(marker).is_file())
        .collect();
    v.sort();
    v
}

/// Our raw output for the folder's input at its timesteps, guided-diffusion's (or ermongroup's)
/// float32 output, and its float64 output.
fn outputs(dir: &Path) -> (Array4<f32>, Array4<f32>, Array4<f32>) {
    let ddpm = Ddpm::load(dir, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{e}"));
    let x = npy4(&dir.join("input.npy"));
    let ts: Array1<i64> = npy(dir.join("timesteps.npy"));
    assert_eq!(ts.to_vec(), vec![0, 500, 999]);
    let t = Tensor::from_vec(ts.iter().map(|&v| v as f32).collect::<Vec<_>>(), ts.len(), &Device::Cpu).unwrap();
    let ours = to_array(&ddpm.unet.forward(&tensor(&x), &t).unwrap());
    let f64_out = npy::<Array4<f64>>(dir.join("output_f64.npy")).mapv(|v| v as f32);
    (ours, npy4(&dir.join("output.npy")), f64_out)
}

#[test]
fn every_adm_fixture_matches_guided_diffusion_to_1e_4() {
    let dirs = folders("adm", "adm.json");
    assert!(dirs.len() >= 4, "expected at least four ADM fixture models, found {}", dirs.len());
    for dir in &dirs {
        let (ours, want, want64) = outputs(dir);
        let std = (want.iter().map(|v| (v * v) as f64).sum::<f64>() / want.len() as f64).sqrt();
        assert!(std > 0.1, "{}: output std {std} (a degenerate fixture)", dir.display());
        let e32 = max_abs_diff(&ours, &want);
        let e64 = max_abs_diff(&ours, &want64);
        println!(
            "{}: max |ours − torch f32| {e32:.2e}, |ours − torch f64| {e64:.2e} (output rms {std:.3})",
            dir.file_name().unwrap().to_string_lossy()
        );
        assert!(e32 < 1e-4 && e64 < 1e-4, "{}: {e32} / {e64}", dir.display());
        let ddpm = Ddpm::load(dir, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(ddpm.format, ModelFormat::Adm);
        assert_eq!(ddpm.config.out_channels(), want.shape()[1]);
    }
}

#[test]
fn float16_weights_run_in_half_precision_too() {
    // The fp16-stored fixture in f16 on the CPU (candle's operations): the error against
    // guided-diffusion's float32 output is that of the precision (1.6e-3 relative), not of a
    // wrong layer. bf16 on the CPU runs expanse's kernels (f32 tensors, bfloat16 products) where
    // the CPU has AVX-512 BF16, and is one clear error elsewhere.
    let dir = fixtures("adm").join("defaults_fp16");
    let x = npy4(&dir.join("input.npy"));
    let want = npy4(&dir.join("output.npy"));
    let rms = |a: &Array4<f32>| (a.iter().map(|v| (v * v) as f64).sum::<f64>() / a.len() as f64).sqrt();
    let t = Tensor::new(&[0f32, 500.0, 999.0], &Device::Cpu).unwrap();
    let ddpm = Ddpm::load(&dir, &Device::Cpu, DType::F16).unwrap();
    let got = to_array(&ddpm.unet.forward(&tensor(&x).to_dtype(DType::F16).unwrap(), &t).unwrap());
    let err = rms(&(&got - &want)) / rms(&want);
    println!("f16: relative rms error {err:.2e}");
    assert!(err < 5e-3, "f16: {err}");
    match Ddpm::load(&dir, &Device::Cpu, DType::BF16) {
        Err(e) => {
            assert!(!expanse::model::kernels::bf16_available(), "{e}");
            assert!(e.to_string().contains("avx512_bf16"), "{e}");
        }
        Ok(m) => {
            let got = to_array(&m.unet.forward(&tensor(&x), &t).unwrap());
            let err = rms(&(&got - &want)) / rms(&want);
            println!("bf16: relative rms error {err:.2e}");
            assert!(err < 2e-2, "bf16: {err}");
        }
    }
}

#[test]
fn every_original_ddpm_fixture_matches_ermongroups_model_to_1e_4() {
    let dirs = folders("ddpm_original", "model.ckpt");
    assert!(!dirs.is_empty(), "no original DDPM fixtures");
    for dir in &dirs {
        let (ours, want, want64) = outputs(dir);
        let e32 = max_abs_diff(&ours, &want);
        let e64 = max_abs_diff(&ours, &want64);
        println!(
            "{}: max |ours − torch f32| {e32:.2e}, |ours − torch f64| {e64:.2e}",
            dir.file_name().unwrap().to_string_lossy()
        );
        assert!(e32 < 1e-4 && e64 < 1e-4, "{}: {e32} / {e64}", dir.display());
        assert_eq!(Ddpm::load(dir, &Device::Cpu, DType::F32).unwrap().format, ModelFormat::OriginalDdpm);
    }
}

#[test]
fn original_keys_map_as_diffusers_conversion_script_maps_them() {
    for dir in folders("ddpm_original", "ddpm.json") {
        let map = json(dir.join("diffusers_keys.json"));
        let cfg = json(dir.join("ddpm.json"));
        let levels = cfg["model"]["ch_mult"].as_array().unwrap().len();
        let pairs = map["mapping"].as_object().unwrap();
        assert!(pairs.len() > 100);
        for (original, converted) in pairs {
            assert_eq!(
                expanse::model::original::diffusers_key(original, levels).as_deref(),
                converted.as_str(),
                "{original}"
            );
        }
        for r in map["reshaped"].as_array().unwrap() {
            assert!(expanse::model::original::is_attention_projection(r["diffusers"].as_str().unwrap()), "{r}");
        }
        // The UNet2DModel config we derive from ddpm.json is the one diffusers' conversion uses.
        let ours: OriginalDdpmConfig = serde_json::from_value(cfg).unwrap();
        let want: UNet2DConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("diffusers_config.json")).unwrap()).unwrap();
        let mut got = ours.unet_config();
        got.num_train_timesteps = want.num_train_timesteps;
        got.dropout = want.dropout;
        assert_eq!(got, want, "{}", dir.display());
    }
}

/// A VarBuilder backend that serves broadcast zeros of the shape asked for, recording names and
/// shapes: builds a network's layout without weights.
struct LayoutProbe(std::sync::Mutex<Vec<(String, Vec<usize>)>>);

impl candle_nn::var_builder::SimpleBackend for LayoutProbe {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap().push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        panic!("unchecked get of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[test]
fn the_256_pixel_adm_layouts_are_guided_diffusions_tensor_for_tensor() {
    // ImageNet 256² unconditional and the AFHQ-dog (P2) flags: channel_mult derived from the
    // image size, num_head_channels, resblock_updown, learn_sigma — every state_dict key and shape.
    let layouts = json(fixtures("adm").join("layouts.json"));
    for (name, layout) in layouts.as_object().unwrap() {
        let cfg: AdmConfig = serde_json::from_value(layout["adm_json"].clone()).unwrap();
        let probe = std::sync::Arc::new(LayoutProbe(Default::default()));
        struct Shared(std::sync::Arc<LayoutProbe>);
        impl candle_nn::var_builder::SimpleBackend for Shared {
            fn get(
                &self,
                s: candle_core::Shape,
                n: &str,
                h: candle_nn::Init,
                d: DType,
                dev: &Device,
            ) -> candle_core::Result<Tensor> {
                self.0.get(s, n, h, d, dev)
            }
            fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
                self.0.get_unchecked(n, d, dev)
            }
            fn contains_tensor(&self, n: &str) -> bool {
                self.0.contains_tensor(n)
            }
        }
        // f16 keeps the CPU kernels from packing (and allocating) the zero weights.
        let vb = candle_nn::VarBuilder::from_backend(Box::new(Shared(probe.clone())), DType::F16, Device::Cpu);
        AdmUNet::new(vb, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got: Vec<(String, Vec<usize>)> = probe.0.lock().unwrap().clone();
        let mut want: Vec<(String, Vec<usize>)> = layout["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t[0].as_str().unwrap().to_string(), t[1].as_array().unwrap().iter().map(usize_of).collect()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got.len(), usize_of(&layout["num_tensors"]), "{name}");
        assert_eq!(got, want, "{name}");
        let params: usize = got.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(params, usize_of(&layout["num_parameters"]), "{name}");
    }
}

#[test]
fn adm_schedule_is_guided_diffusions() {
    let ddpm = Ddpm::load(&fixtures("adm").join("p2_like"), &Device::Cpu, DType::F32).unwrap();
    let want: Array1<f64> = npy(fixtures("adm").join("ddim/alphas_cumprod.npy"));
    let schedule = NoiseSchedule::from_config(&ddpm.scheduler).unwrap();
    assert_eq!(schedule.len(), want.len());
    for (t, w) in want.iter().enumerate() {
        assert!((schedule.alpha_bar(t) - w).abs() < 1e-12, "t={t}");
    }
}

#[test]
fn adm_ddim_inversion_and_generation_match_the_float64_reference() {
    let root = fixtures("adm").join("ddim");
    let grid = json(root.join("grid.json"));
    let ddpm = Ddpm::load(&fixtures("adm").join(grid["model"].as_str().unwrap()), &Device::Cpu, DType::F32).unwrap();
    let steps = usize_of(&grid["steps"]);
    let t0 = usize_of(&grid["t0"]);
    let ddim = Ddim::new(NoiseSchedule::from_config(&ddpm.scheduler).unwrap(), steps, t0).unwrap();
    let seq: Vec<usize> = grid["seq"].as_array().unwrap().iter().map(usize_of).collect();
    assert_eq!(ddim.seq, seq);
    let pb = ProgressBar::hidden();
    let x0 = npy4(&root.join("x0.npy"));
    let z = ddim.invert(&ddpm, &x0, 2, &pb).unwrap();
    let zw = npy4(&root.join("latents.npy"));
    let rec = ddim.generate(&ddpm, &z, 0.0, 0, 2, &pb).unwrap();
    let rw = npy4(&root.join("reconstruction.npy"));
    let (ez, er) = (max_abs_diff(&z, &zw), max_abs_diff(&rec, &rw));
    println!(
        "latents {ez:.2e}, reconstruction {er:.2e} against float64; reference f32-vs-f64: {}",
        grid["max_abs_diff_f32_run_vs_f64"]
    );
    assert!(ez < 1e-4 && er < 1e-4, "{ez} / {er}");
}

/// A copy of a fixture ADM model with its weights (saved as safetensors) edited by `edit` and its
/// flags by `flags`.
fn edited_adm(edit: impl FnOnce(&mut HashMap<String, Tensor>), flags: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let src = fixtures("adm").join("legacy_heads");
    let dir = tempfile::tempdir().unwrap();
    let mut w: HashMap<String, Tensor> =
        candle_core::pickle::read_all(src.join("model.pt")).unwrap().into_iter().collect();
    edit(&mut w);
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors")).unwrap();
    let mut cfg = json(src.join("adm.json"));
    flags(&mut cfg);
    std::fs::write(dir.path().join("adm.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    dir
}

#[test]
fn bad_checkpoints_and_flags_name_the_file_and_the_key() {
    // The edited copy itself loads and gives the same numbers.
    let same = edited_adm(|_| {}, |_| {});
    let (ours, want, _) = {
        let src = fixtures("adm").join("legacy_heads");
        for f in ["input.npy", "timesteps.npy", "output.npy", "output_f64.npy"] {
            std::fs::copy(src.join(f), same.path().join(f)).unwrap();
        }
        outputs(same.path())
    };
    assert!(max_abs_diff(&ours, &want) < 1e-4);

    let d = edited_adm(|w| drop(w.remove("middle_block.1.qkv.weight")), |_| {});
    let e = load_err(d.path());
    assert!(
        e.contains("missing weight 'middle_block.1.qkv.weight'")
            && e.contains("model.safetensors")
            && e.contains("adm.json"),
        "{e}"
    );
    let d = edited_adm(
        |w| drop(w.insert("label_emb.weight".into(), Tensor::zeros((10, 128), DType::F32, &Device::Cpu).unwrap())),
        |_| {},
    );
    let e = load_err(d.path());
    assert!(e.contains("not used") && e.contains("label_emb.weight"), "{e}");
    // Flags that do not match the tensors.
    let d = edited_adm(|_| {}, |c| c["num_channels"] = Value::from(64));
    let e = load_err(d.path());
    assert!(e.contains("wrong shape") && e.contains("model.safetensors"), "{e}");
    let d = edited_adm(|_| {}, |c| c["learn_sigma"] = Value::from(true));
    let e = load_err(d.path());
    assert!(e.contains("out.2.weight"), "{e}");
    // Unknown and unsupported flags.
    let d = edited_adm(|_| {}, |c| c["num_chanels"] = Value::from(32));
    let e = load_err(d.path());
    assert!(e.contains("adm.json") && e.contains("num_chanels"), "{e}");
    let d = edited_adm(|_| {}, |c| c["class_cond"] = Value::from(true));
    let e = load_err(d.path());
    assert!(e.contains("adm.json") && e.contains("class_cond"), "{e}");
    // Files that are not state dicts, and folders with none or two checkpoints.
    let d = edited_adm(|_| {}, |_| {});
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    assert!(load_err(d.path()).contains("no checkpoint"));
    std::fs::write(d.path().join("model.pt"), b"not a zip file").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.pt") && e.contains("state_dict"), "{e}");
    std::fs::copy(fixtures("adm").join("not_a_state_dict.pt"), d.path().join("model.pt")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.pt") && e.contains("state_dict"), "{e}");
    std::fs::write(d.path().join("other.pt"), b"").unwrap();
    assert!(load_err(d.path()).contains("more than one checkpoint"));
    // Through the CLI: one error naming the file and the key, a non-zero exit, nothing written.
    let d = edited_adm(|_| {}, |c| c["num_chanels"] = Value::from(32));
    let out = d.path().join("raw.npy");
    let x0 = fixtures("adm").join("ddim/x0.npy");
    let r = common::expanse(&[
        "unet-eval",
        "--model",
        d.path().to_str().unwrap(),
        "--input",
        x0.to_str().unwrap(),
        "--timestep",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("adm.json") && err.contains("num_chanels") && !out.exists(), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
}

#[test]
fn cli_commands_take_adm_folders_like_diffusers_folders() {
    let dir = fixtures("adm").join("p2_like");
    let out = tempfile::tempdir().unwrap();
    let o = |n: &str| out.path().join(n).to_string_lossy().into_owned();
    let x0 = fixtures("adm").join("ddim/x0.npy");
    let model = dir.to_string_lossy().into_owned();
    // unet-eval writes all six output channels.
    common::ok(&[
        "unet-eval",
        "--model",
        &model,
        "--input",
        x0.to_str().unwrap(),
        "--timestep",
        "500",
        "--out",
        &o("raw.npy"),
    ]);
    assert_eq!(npy4(Path::new(&o("raw.npy"))).shape(), &[2, 6, 16, 16]);
    common::ok(&[
        "invert",
        "--model",
        &model,
        "--input",
        x0.to_str().unwrap(),
        "--steps",
        "6",
        "--t0",
        "500",
        "--out",
        &o("z.npy"),
    ]);
    let z = npy4(Path::new(&o("z.npy")));
    assert!(max_abs_diff(&z, &npy4(&fixtures("adm").join("ddim/latents.npy"))) < 1e-4);
    common::ok(&[
        "reconstruct",
        "--model",
        &model,
        "--input",
        x0.to_str().unwrap(),
        "--steps",
        "6",
        "--t0",
        "500",
        "--out",
        &o("rec.npy"),
        "--report",
        &o("rec.json"),
    ]);
    assert!(
        max_abs_diff(&npy4(Path::new(&o("rec.npy"))), &npy4(&fixtures("adm").join("ddim/reconstruction.npy"))) < 1e-4
    );
    let report = json(o("rec.json"));
    assert!(report.to_string().contains("mse"), "{report}");
    let bench = common::ok(&["bench", "--model", &model, "--batch", "1", "--size", "16", "--repeats", "1"]);
    assert!(bench.contains("adm") && bench.contains("M parameters"), "{bench}");
    // A whole run on the ADM folder: 3-channel model, 1-channel maps (ingest maps the channels).
    let config = out.path().join("adm.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nname = \"adm\"\nseed = 1\nformats = [\"fits\"]\n\n[model]\npath = \"{}\"\nbatch = \
                4\n\n[inversion]\nsteps = 6\n\n\
             [sampling]\ncount = 2\nk = 3\nbudget = 10000\n\n[[domain]]\nname = \"clouds\"\ninputs = \
            [\"{}\"]\nmax_maps = 6\n\
             transform = \"log10\"\nsize = 16\n",
            model,
            sample("clouds_64.fits").display()
        ),
    )
    .unwrap();
    let plan = common::ok(&["run", config.to_str().unwrap(), "--out", &o("run"), "--dry-run"]);
    assert!(plan.contains("(adm, 3 channel(s), trained at 16x16, epsilon prediction)"), "{plan}");
    common::ok(&["run", config.to_str().unwrap(), "--out", &o("run")]);
    assert!(out.path().join("run/samples/clouds.fits").is_file() && out.path().join("run/summary.md").is_file());

    // Flags that do not match the checkpoint pass the config's checks but not the dry run, which
    // loads the weights; a run fails before it writes anything.
    let wrong = edited_adm(|_| {}, |c| c["num_channels"] = Value::from(64));
    let text = std::fs::read_to_string(&config).unwrap().replace(&model, wrong.path().to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let r = common::expanse(&["run", config.to_str().unwrap(), "--out", &o("wrong"), "--dry-run"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("wrong shape"), "{err}");
    let r = common::expanse(&["run", config.to_str().unwrap(), "--out", &o("wrong")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("wrong shape") && err.contains("nothing was written"), "{err}");
    assert!(!out.path().join("wrong").exists());
}

#[test]
fn cli_commands_take_original_ddpm_folders() {
    let dir = fixtures("ddpm_original").join("small");
    let out = tempfile::tempdir().unwrap();
    let raw = out.path().join("raw.npy");
    common::ok(&[
        "unet-eval",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        dir.join("input.npy").to_str().unwrap(),
        "--timestep",
        "500",
        "--out",
        raw.to_str().unwrap(),
    ]);
    let (got, want) = (npy4(&raw), npy4(&dir.join("output.npy")));
    let e = got
        .index_axis(ndarray::Axis(0), 1)
        .iter()
        .zip(want.index_axis(ndarray::Axis(0), 1).iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(e < 1e-4, "{e}");
}
