//! Parity with diffusers: the raw UNet output of every fixture model (random-init models saved
//! by diffusers' `save_pretrained`, tools/make_unet_fixtures.py) equals diffusers' to 1e-4 in
//! f32, and our DDIM inversion/generation equals a float64 reference of the paper's algorithm.

mod common;

use common::{
    assert_close, fixtures, json, load_err, manifest, max_abs_diff, npy, npy4, root, tensor, to_array, usize_of,
};
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use expanse::diffusion::{Ddim, NoiseSchedule};
use expanse::model::Ddpm;
use indicatif::ProgressBar;
use ndarray::{Array1, Array4};
use serde_json::Value;

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "unet";

fn run(model_dir: &Path, input: &str) -> (Array4<f32>, Array4<f32>) {
    let ddpm = Ddpm::load(model_dir, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{e}"));
    let x = npy4(&model_dir.join(format!("{input}.npy")));
    let ts: Array1<i64> = npy(model_dir.join("timesteps.npy"));
    let t = Tensor::from_vec(ts.iter().map(|&v| v as f32).collect::<Vec<_>>(), ts.len(), &Device::Cpu).unwrap();
    let out = ddpm.unet.forward(&tensor(&x), &t).unwrap();
    let want = npy4(&model_dir.join(input.replace("input", "output") + ".npy"));
    (to_array(&out), want)
}

#[test]
fn every_fixture_model_matches_diffusers_to_1e_4() {
    let m = manifest(&fixtures(DIR));
    let mut checked = Vec::new();
    for model in m["models"].as_array().unwrap() {
        let folder = model["folder"].as_str().unwrap();
        let dir = fixtures(DIR).join(folder);
        let mut inputs = vec!["input"];
        if dir.join("input32.npy").exists() {
            inputs.push("input32");
        }
        for input in inputs {
            let (got, want) = run(&dir, input);
            let err = max_abs_diff(&got, &want);
            println!("{folder} {input}: max |expanse - diffusers| = {err:.2e}");
            assert!(err <= 1e-4, "{folder} {input}: max abs error {err}");
            checked.push(folder.to_string());
        }
        if let Some(legacy) = model["legacy_copy"]["folder"].as_str() {
            let (got, want) = run(&fixtures(DIR).join(legacy), "input");
            let err = max_abs_diff(&got, &want);
            println!("{legacy}: max |expanse - diffusers| = {err:.2e}");
            assert!(err <= 1e-4, "{legacy}: max abs error {err}");
            checked.push(legacy.to_string());
        }
    }
    for required in
        ["attn_multihead", "ddpm_legacy", "ddpm_legacy_keys", "learned_sigma", "gray_deep", "no_attention_key"]
    {
        assert!(checked.iter().any(|c| c == required), "{required} not checked");
    }
}

/// The fast CPU kernels give the same bits at any thread count (each task sums in a fixed order).
#[test]
fn the_forward_pass_does_not_depend_on_the_thread_count() {
    let dir = fixtures(DIR).join("attn_multihead");
    let ddpm = Ddpm::load(&dir, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{e}"));
    let x = tensor(&npy4(&dir.join("input.npy")));
    let t = Tensor::from_vec(vec![421f32; x.dim(0).unwrap()], x.dim(0).unwrap(), &Device::Cpu).unwrap();
    let outputs: Vec<Array4<f32>> = [1, 2, 5]
        .iter()
        .map(|&n| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| to_array(&ddpm.unet.forward(&x, &t).unwrap()))
        })
        .collect();
    assert_eq!(max_abs_diff(&outputs[0], &outputs[1]), 0.0);
    assert_eq!(max_abs_diff(&outputs[0], &outputs[2]), 0.0);
}

#[test]
fn schedules_match_the_reference() {
    for (folder, schedule) in [
        ("attn_multihead", NoiseSchedule::linear(1e-4, 0.02, 1000)),
        ("gray_deep", NoiseSchedule::squaredcos_cap_v2(1000)),
    ] {
        let want: Array1<f64> = npy(fixtures(DIR).join(folder).join("alphas_cumprod_exact.npy"));
        for (t, w) in want.iter().enumerate() {
            assert!((schedule.alpha_bar(t) - w).abs() < 1e-12, "{folder} t={t}");
        }
        let ddpm = Ddpm::load(&fixtures(DIR).join(folder), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            NoiseSchedule::from_config(&ddpm.scheduler).unwrap(),
            schedule,
            "{folder}: schedule from scheduler_config.json"
        );
    }
}

#[test]
fn ddim_inversion_and_generation_match_the_float64_reference() {
    let grid = json(fixtures(DIR).join("ddim/grid.json"));
    let model = grid["model"].as_str().unwrap();
    let ddpm = Ddpm::load(&fixtures(DIR).join(model), &Device::Cpu, DType::F32).unwrap();
    let steps = usize_of(&grid["steps"]);
    let t0 = usize_of(&grid["t0"]);
    let mut ddim = Ddim::new(NoiseSchedule::from_config(&ddpm.scheduler).unwrap(), steps, t0).unwrap();
    let seq: Vec<usize> = grid["seq"].as_array().unwrap().iter().map(usize_of).collect();
    assert_eq!(ddim.seq, seq);
    let pb = ProgressBar::hidden();
    let x0 = npy4(&fixtures(DIR).join("ddim/x0.npy"));
    // Batches of 1 and 2 must give the same numbers.
    let z = ddim.invert(&ddpm, &x0, 1, &pb).unwrap();
    let z2 = ddim.invert(&ddpm, &x0, 2, &pb).unwrap();
    assert!(max_abs_diff(&z, &z2) < 1e-5);
    assert_close(&z, &npy4(&fixtures(DIR).join("ddim/latents.npy")), 1e-4, 1e-4, "latents");
    let rec = ddim.generate(&ddpm, &z, 0.0, 0, 2, &pb).unwrap();
    assert_close(&rec, &npy4(&fixtures(DIR).join("ddim/reconstruction.npy")), 5e-3, 1e-3, "reconstruction");
    ddim.fixed_point = 3;
    let zf = ddim.invert(&ddpm, &x0, 2, &pb).unwrap();
    assert_close(&zf, &npy4(&fixtures(DIR).join("ddim/latents_fixed_point3.npy")), 5e-4, 1e-3, "fixed-point latents");
    let recf = ddim.generate(&ddpm, &zf, 0.0, 0, 2, &pb).unwrap();
    // The reference's own float32 run differs from its float64 one by 7.1e-3 here (grid.json).
    assert_close(
        &recf,
        &npy4(&fixtures(DIR).join("ddim/reconstruction_fixed_point3.npy")),
        1e-2,
        1e-3,
        "fixed-point reconstruction",
    );
}

/// Copies a fixture model with its weights edited by `edit`.
fn edited_model(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let src = fixtures(DIR).join("attn_multihead");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "scheduler_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut w = candle_core::safetensors::load(src.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut w);
    candle_core::safetensors::save(&w, dir.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    dir
}

#[test]
fn weight_errors_name_the_key_and_the_shapes() {
    let d = edited_model(|w| {
        w.remove("mid_block.attentions.0.to_k.weight");
    });
    let e = load_err(d.path());
    assert!(e.contains("missing weight 'mid_block.attentions.0.to_k.weight'") && e.contains("safetensors"), "{e}");
    let d = edited_model(|w| {
        w.insert("extra.layer.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    });
    let e = load_err(d.path());
    assert!(e.contains("not used") && e.contains("extra.layer.weight"), "{e}");
    let d = edited_model(|w| {
        w.insert("conv_out.bias".into(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap());
    });
    let e = load_err(d.path());
    assert!(e.contains("conv_out.bias") && e.contains("expected [3]") && e.contains("found [4]"), "{e}");
}

#[test]
fn unsupported_configs_and_sizes_are_clear_errors() {
    let d = edited_model(|_| {});
    let cfg_path = d.path().join("config.json");
    let mut cfg = json(&cfg_path);
    cfg["down_block_types"][0] = Value::String("SkipDownBlock2D".into());
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("unsupported down block type 'SkipDownBlock2D'") && e.contains("config.json"), "{e}");
    let ddpm = Ddpm::load(&fixtures(DIR).join("attn_multihead"), &Device::Cpu, DType::F32).unwrap();
    assert!(ddpm.check_input(3, 16, 16).is_ok());
    let e = ddpm.check_input(3, 15, 16).unwrap_err().to_string();
    assert!(e.contains("15x16") && e.contains("multiples of 2"), "{e}");
    assert!(ddpm.check_input(1, 16, 16).unwrap_err().to_string().contains("channel"));
    assert!(load_err(Path::new("/no/such/model")).contains("no such model folder"));
}

#[test]
fn half_precision_runs_where_candle_supports_it() {
    // On the CPU candle runs f16 (its own operations): the error against diffusers' float32
    // output is that of the 10-bit mantissa (measured 1.8e-3 of the output RMS), not of a wrong
    // layer. bf16 runs on expanse's kernels where the CPU has AVX-512 BF16 (next test), and is one
    // clear error elsewhere.
    let dir = fixtures(DIR).join("attn_multihead");
    let x = npy4(&dir.join("input.npy"));
    let ts: Array1<i64> = npy(dir.join("timesteps.npy"));
    let t = Tensor::from_vec(ts.iter().map(|&v| v as f32).collect::<Vec<_>>(), ts.len(), &Device::Cpu).unwrap();
    let want = npy4(&dir.join("output.npy"));
    let rms = |a: &Array4<f32>| (a.iter().map(|v| (v * v) as f64).sum::<f64>() / a.len() as f64).sqrt();
    let m = Ddpm::load(&dir, &Device::Cpu, DType::F16).unwrap();
    let got =
        to_array(&m.unet.forward(&tensor(&x).to_dtype(DType::F16).unwrap(), &t).unwrap().to_dtype(DType::F32).unwrap());
    let rel = rms(&(&got - &want)) / rms(&want);
    println!("f16: relative RMS error {rel:.2e}");
    assert!(rel < 5e-3, "f16 deviates by {rel} of the output RMS");
    if !expanse::model::kernels::bf16_available() {
        let e = Ddpm::load(&dir, &Device::Cpu, DType::BF16).err().expect("bf16 refused without AVX-512 BF16");
        assert!(e.to_string().contains("avx512_bf16"), "{e}");
    }
}

/// bf16 on the CPU (AVX-512 BF16): the stride-1 convolutions and attention products take bfloat16
/// operands with f32 sums. Every fixture model's output is within the rounding of 8-bit mantissas
/// of diffusers' float32 one, is not the f32 output (the bf16 kernels ran), and does not depend on
/// the thread count.
#[test]
fn bf16_on_the_cpu_stays_within_its_rounding() {
    if !expanse::model::kernels::bf16_available() {
        println!("no AVX-512 BF16 on this CPU: bf16 is refused here (previous test)");
        return;
    }
    let m = manifest(&fixtures(DIR));
    for model in m["models"].as_array().unwrap() {
        let folder = model["folder"].as_str().unwrap();
        let dir = fixtures(DIR).join(folder);
        let ddpm = Ddpm::load(&dir, &Device::Cpu, DType::BF16).unwrap_or_else(|e| panic!("{folder}: {e}"));
        assert_eq!(ddpm.dtype, DType::BF16);
        let x = tensor(&npy4(&dir.join("input.npy")));
        let ts: Array1<i64> = npy(dir.join("timesteps.npy"));
        let t = Tensor::from_vec(ts.iter().map(|&v| v as f32).collect::<Vec<_>>(), ts.len(), &Device::Cpu).unwrap();
        let got = to_array(&ddpm.unet.forward(&x, &t).unwrap());
        let (f32_out, want) = run(&dir, "input");
        let rms = |a: &Array4<f32>| (a.iter().map(|v| (v * v) as f64).sum::<f64>() / a.len() as f64).sqrt();
        let rel = rms(&(&got - &want)) / rms(&want);
        println!("{folder}: bf16 relative RMS error {rel:.2e}");
        assert!(rel < 2e-2, "{folder}: bf16 deviates by {rel} of the output RMS");
        assert!(got != f32_out, "{folder}: bf16 gave the f32 output");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let again = pool.install(|| to_array(&ddpm.unet.forward(&x, &t).unwrap()));
        assert!(again == got, "{folder}: bf16 output depends on the thread count");
    }
}

#[test]
fn schedules_match_diffusers_with_and_without_zero_terminal_snr() {
    let dir = fixtures("schedules");
    let manifest = manifest(&dir);
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), 6);
    for (file, cfg) in files {
        let config: expanse::model::SchedulerConfig = serde_json::from_value(cfg.clone()).unwrap();
        let ours = NoiseSchedule::from_config(&config).unwrap();
        let want: Array1<f64> = npy(dir.join(file));
        // diffusers builds the schedule in float32.
        let err = want.iter().enumerate().map(|(t, w)| (ours.alpha_bar(t) - w).abs()).fold(0.0, f64::max);
        assert!(err < 2e-6, "{file}: {err}");
        if config.rescale_betas_zero_snr {
            assert_eq!(ours.alpha_bar(999), 0.0, "{file}");
            // The zero-SNR level cannot be a DDIM end point.
            let e = Ddim::new(ours.clone(), 10, 999).unwrap_err().to_string();
            assert!(e.contains("zero-SNR") && e.contains("t0 < 999"), "{e}");
            assert!(Ddim::new(ours, 10, 998).is_ok());
        }
    }
}

#[test]
fn scheduler_keys_that_change_the_steps_are_refused_by_name() {
    for (key, value, cause) in [
        ("thresholding", serde_json::json!(true), "thresholding = true"),
        ("_class_name", serde_json::json!("ScoreSdeVeScheduler"), "_class_name 'ScoreSdeVeScheduler'"),
        ("variance_type", serde_json::json!("fixed_huge"), "variance_type 'fixed_huge'"),
    ] {
        let d = edited_model(|_| {});
        let path = d.path().join("scheduler_config.json");
        let mut cfg = json(&path);
        cfg[key] = value;
        std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
        let e = load_err(d.path());
        assert!(e.contains(cause) && e.contains("scheduler_config.json"), "{key}: {e}");
    }
}

#[test]
fn the_shipped_base_model_is_the_one_its_training_record_describes() {
    use sha2::Digest;
    let dir = root().join("data/models/expanse-natural-32");
    let record = json(dir.join("training.json"));
    let weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&weights));
    assert_eq!(
        record["weights_sha256"].as_str(),
        Some(sha.as_str()),
        "the weights are not those of the recorded training run"
    );
    assert!(
        std::fs::read_to_string(dir.join("MODEL_CARD.md")).unwrap().contains(&sha),
        "MODEL_CARD.md does not quote the weights' SHA-256"
    );
    // The script's defaults are the recorded run's.
    let script = std::fs::read_to_string(root().join("tools/train_base.py")).unwrap();
    let steps = record["steps_requested"].as_u64().unwrap();
    assert!(
        script.contains(&format!("\"--steps\", type=int, default={steps}")),
        "tools/train_base.py's default --steps is not {steps}"
    );
    assert_eq!(record["stop_reason"].as_str(), Some(format!("reached --steps {steps}").as_str()));
    assert_eq!(record["seed"], 0);
    // The architecture the record describes is the shipped config.
    let config = json(dir.join("config.json"));
    for (k, v) in record["model_config"].as_object().unwrap() {
        assert_eq!(&config[k], v, "config.json {k}");
    }
}
