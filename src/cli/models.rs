//! Commands that run the UNet: unet-eval, invert, generate, reconstruct, bench; and what they share (loading the model,
//! the grid, progress bars).

use anyhow::{bail, Context, Result};

use super::args::*;
use candle_core::{DType, Tensor};
use indicatif::ProgressBar;

use expanse::diffusion::{self, Ddim};
use expanse::error::Error;
use expanse::latents;
use expanse::model::{self, Ddpm};

pub fn load_model(a: &ModelArgs) -> Result<Ddpm> {
    Ok(a.section().load().map_err(Error::flag)?)
}

pub fn progress(total: u64, what: &str) -> ProgressBar {
    expanse::runtime::progress_bar(total, what)
}

pub fn ddim_for(model: &Ddpm, g: &GridArgs, fixed_point: usize) -> Result<Ddim> {
    Ok(g.section(fixed_point).ddim(model).map_err(Error::flag)?)
}

pub fn batches(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}

pub fn invert_input(ddpm: &Ddpm, path: &std::path::Path) -> Result<latents::ModelInput> {
    let input = latents::read_model_input(path)?;
    let (_, c, h, w) = input.data.dim();
    ddpm.check_input(c, h, w).with_context(|| format!("{}", path.display()))?;
    Ok(input)
}

pub fn run_unet_eval(a: UnetEvalArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let input = invert_input(&ddpm, &a.input)?;
    let pb = progress(batches(input.data.dim().0, a.model.batch), "unet-eval");
    let out = diffusion::raw_outputs(&ddpm, &input.data, a.timestep, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let rec = vec![
        ("timestep", serde_json::json!(a.timestep)),
        ("model", serde_json::json!({"folder": ddpm.dir, "format": ddpm.format.as_str()})),
    ];
    let written = latents::write_model_output(&a.out, &out, "unet-eval", &input, rec)?;
    println!("wrote {} (shape {:?})", written[0].display(), out.shape());
    Ok(())
}

/// The maps to invert from `path` (see [`invert_input`]), with a warning on stderr when they lie
/// far outside the model's [-1, 1] (physical values that were never normalized).
fn maps_to_invert(ddpm: &Ddpm, path: &std::path::Path) -> Result<latents::ModelInput> {
    let input = invert_input(ddpm, path)?;
    let (lo, hi) = input
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if lo < -1.5 || hi > 1.5 {
        eprintln!(
            "warning: {}: values from {lo:.4e} to {hi:.4e}, far outside the model's [-1, 1]: these look like maps \
                that were never normalized (run `expanse ingest` with a transform first); the latents will mean \
                little",
            path.display()
        );
    }
    Ok(input)
}

pub fn run_invert(a: InvertArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, a.inversion.fixed_point)?;
    let input = maps_to_invert(&ddpm, &a.inversion.input)?;
    let n = input.data.dim().0;
    let steps = (ddim.seq.len() - 1) as u64;
    let pb = progress(steps * batches(n, a.model.batch), "invert");
    let start = std::time::Instant::now();
    let z = ddim.invert(&ddpm, &input.data, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let evals = diffusion::unet_evaluations(&ddim, n, true, false);
    let written = latents::write_model_output(&a.out, &z, "invert", &input, ddim.records(&ddpm)?)?;
    println!(
        "inverted {n} map(s) to level {} in {} steps ({} UNet evaluations per map, {:.2} s); wrote {}",
        a.grid.t0,
        steps,
        evals / n,
        start.elapsed().as_secs_f64(),
        written[0].display()
    );
    Ok(())
}

pub fn run_generate(a: GenerateArgs) -> Result<()> {
    if !(a.eta >= 0.0 && a.eta.is_finite()) {
        bail!("--eta must be >= 0, got {}", a.eta);
    }
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, 0)?;
    let input = invert_input(&ddpm, &a.latents)?;
    let n = input.data.dim().0;
    let pb = progress(ddim.seq.len() as u64 * batches(n, a.model.batch), "generate");
    let x = ddim.generate(&ddpm, &input.data, a.eta, a.seed, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let mut rec = ddim.records(&ddpm)?;
    rec.push(("generation", serde_json::json!({"eta": a.eta, "seed": a.seed})));
    let written = latents::write_model_output(&a.out, &x, "generate", &input, rec)?;
    println!("generated {n} map(s) in {} steps; wrote {}", ddim.seq.len(), written[0].display());
    Ok(())
}

pub fn run_reconstruct(a: ReconstructArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, a.inversion.fixed_point)?;
    let input = maps_to_invert(&ddpm, &a.inversion.input)?;
    let r = diffusion::Reconstruction::run(&ddim, &ddpm, &input.data, a.model.batch, &progress)?;
    print!("{}", r.table());
    println!(
        "cost: inversion {} UNet evaluations ({} per step with {} fixed-point iteration(s)) in {:.1} s; generation {} \
            in {:.1} s",
        r.unet_evaluations.inversion,
        1 + ddim.fixed_point,
        ddim.fixed_point,
        r.seconds.inversion,
        r.unet_evaluations.generation,
        r.seconds.generation
    );
    if let Some(out) = &a.out {
        let mut rec = ddim.records(&ddpm)?;
        rec.push(("reconstruction_mse", serde_json::json!(r.per_map.iter().map(|e| e.mse).collect::<Vec<_>>())));
        let written = latents::write_model_output(out, &r.images, "reconstruct", &input, rec)?;
        println!("wrote {}", written[0].display());
    }
    if let Some(path) = &a.report {
        let report = r.report(&a.inversion.input, &ddpm.dir, &ddim);
        expanse::io::write_text(path, &serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    match a.kernels.as_str() {
        "fast" => expanse::model::kernels::set_enabled(true),
        "candle" => expanse::model::kernels::set_enabled(false),
        o => bail!("--kernels: '{o}' is not fast or candle"),
    }
    let ddpm = load_model(&a.model)?;
    let size = a.size.or_else(|| ddpm.config.native_size().map(|s| s[0])).unwrap_or(32);
    let c = ddpm.config.in_channels();
    ddpm.check_input(c, size, size)?;
    let b = a.model.batch;
    let x = Tensor::randn(0f32, 1f32, (b, c, size, size), &ddpm.device)?;
    let sync = |t: &Tensor| -> Result<()> {
        let _ = t.flatten_all()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    };
    sync(&ddpm.forward(&x, 500.0)?)?;
    let mut times = Vec::with_capacity(a.repeats);
    for i in 0..a.repeats.max(1) {
        let t = std::time::Instant::now();
        sync(&ddpm.forward(&x, (i * 97 % 1000) as f64)?)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|p, q| p.partial_cmp(q).expect("finite"));
    let median = times[times.len() / 2];
    println!(
        "model {} ({}, {:.2} M parameters), {} {:?}, batch {b}, {size}x{size}, threads {}, kernels {}",
        ddpm.dir.display(),
        ddpm.format.as_str(),
        ddpm.parameters as f64 / 1e6,
        model::device_name(&ddpm.device),
        ddpm.dtype,
        expanse::runtime::threads(),
        a.kernels
    );
    println!(
        "UNet forward: median {:.1} ms per batch ({:.2} ms per map, {:.1} maps/s) over {} runs; min {:.1} ms, max \
            {:.1} ms",
        1e3 * median,
        1e3 * median / b as f64,
        b as f64 / median,
        times.len(),
        1e3 * times[0],
        1e3 * times[times.len() - 1]
    );
    if a.profile {
        use expanse::model::profile;
        profile::enable(true);
        let t = std::time::Instant::now();
        for i in 0..a.repeats.max(1) {
            sync(&ddpm.forward(&x, (i * 97 % 1000) as f64)?)?;
        }
        let total = t.elapsed().as_secs_f64();
        profile::enable(false);
        let n = a.repeats.max(1) as f64;
        let table = profile::table();
        println!("{:<34} {:>8} {:>12} {:>8} {:>10}", "operation (per forward)", "calls", "ms", "share", "GFLOP/s");
        let mut accounted = 0.0;
        let mut rows: Vec<_> = table.iter().collect();
        rows.sort_by(|p, q| q.1.seconds.total_cmp(&p.1.seconds));
        for (op, v) in rows {
            accounted += v.seconds;
            let gflops = if v.flops > 0.0 { format!("{:.1}", v.flops / v.seconds / 1e9) } else { "-".into() };
            println!(
                "{op:<34} {:>8.0} {:>12.2} {:>7.1} % {gflops:>10}",
                v.calls as f64 / n,
                1e3 * v.seconds / n,
                100.0 * v.seconds / total
            );
        }
        println!(
            "{:<34} {:>8} {:>12.2} {:>7.1} %",
            "other (embedding, linear, copies)",
            "",
            1e3 * (total - accounted) / n,
            100.0 * (total - accounted) / total
        );
        println!("{:<34} {:>8} {:>12.2}", "forward", "", 1e3 * total / n);
    }
    if let Some(m) = expanse::runtime::peak_memory_mib() {
        println!("peak resident memory: {m:.0} MiB");
    }
    Ok(())
}
