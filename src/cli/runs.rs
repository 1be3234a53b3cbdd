//! Commands over a whole run: run, slurm, fidelity.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::args::*;
use expanse::pipeline::{Plan, RunConfig, RunOptions, RunPart, Shard};

pub fn run_fidelity(a: FidelityArgs) -> Result<()> {
    let mut config = expanse::fidelity::FidelityConfig::read(&a.config)?;
    if let Some(seeds) = &a.seeds {
        config.only_seeds(seeds)?;
    }
    let t = std::time::Instant::now();
    let report = expanse::fidelity::run(&config, &a.out, a.variants.as_deref(), |r| match &r.error {
        Some(e) => println!("{} seed {} {}: failed: {e}", r.variant, r.seed, r.domain),
        None => println!(
            "{} seed {} {}: accepted {}/{}, slopes {:.2} vs {:.2} (Welch t {:.2}), level ratio {:.2}, Hellinger \
                {:.3}, memorization {:.2}, reconstruction {:.1} dB",
            r.variant,
            r.seed,
            r.domain,
            r.accepted,
            r.tried,
            r.slope_synthetic().0,
            r.slope_real().0,
            r.welch_t(),
            r.level_ratio(),
            r.hellinger().0,
            r.memorization_ratio(),
            r.reconstruction_db.0
        ),
    })?;
    print!("\n{}", expanse::fidelity::markdown(&report));
    println!("{} run(s) in {:.0} s", report.rows.len() / report.domains.len().max(1), t.elapsed().as_secs_f64());
    for w in &report.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

pub fn run_slurm(a: SlurmArgs) -> Result<()> {
    use expanse::pipeline::slurm;
    let config = RunConfig::read(&a.config)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(config.name()));
    let plan = Plan::new(config, &a.config)?;
    let opts = slurm::SlurmOptions {
        shards: a.shards,
        time: a.time,
        mem: a.mem,
        partition: a.partition,
        account: a.account,
        gpus: a.gpus,
        cpus_per_task: a.cpus_per_task,
        sbatch_args: a.sbatch_arg,
    };
    let exe = std::env::current_exe().context("cannot find the expanse binary's path")?;
    let jobs = slurm::write_scripts(&plan, &a.config, &out, &exe, &opts)?;
    println!("wrote {} job scripts into {}", jobs.len(), out.join("slurm").display());
    if !a.submit {
        println!("submit them in order (or pass --submit):\n");
        print!("{}", slurm::submit_commands(&jobs));
        return Ok(());
    }
    let ids = slurm::submit(&jobs, &out)?;
    for (stage, id) in &ids {
        println!("{stage}: job {id}");
    }
    println!("job ids in {}; logs in {}", out.join("slurm/jobs.json").display(), out.join("slurm/logs").display());
    Ok(())
}

pub fn run_init(a: InitArgs) -> Result<()> {
    let shipped = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/models/expanse-natural-32"));
    let model = match a.model {
        Some(m) => m,
        None if shipped.is_dir() => shipped,
        None => bail!("name the model folder with --model (the shipped base model is not at {})", shipped.display()),
    };
    let opts = expanse::pipeline::template::TemplateOptions { inputs: a.inputs, model, domain: a.name, out: a.out };
    let c = expanse::pipeline::template::write(&opts, a.force)?;
    println!(
        "wrote {}: {} map(s) of {}x{}, transform {} ({}){}",
        opts.out.display(),
        c.maps,
        c.shape.0,
        c.shape.1,
        c.transform,
        c.why_transform,
        c.crop.map(|s| format!(", central {s}x{s} crop")).unwrap_or_default()
    );
    println!("check it with: expanse run {} --dry-run", opts.out.display());
    Ok(())
}

/// `threads_given`: `--threads` was passed (it wins over `run.threads`).
pub fn run_run(a: RunArgs, threads_given: bool) -> Result<()> {
    let mut config = RunConfig::read(&a.config)?;
    if let Some(n) = a.count {
        if n == 0 {
            bail!("--count must be at least 1");
        }
        if n > config.sampling.budget {
            bail!(
                "--count {n}: more than sampling.budget = {} candidates; raise the budget in the config",
                config.sampling.budget
            );
        }
        config.sampling.count = n;
    }
    if let Some(s) = a.seed {
        config.run.seed = s;
    }
    if let (Some(n), false) = (config.run.threads, threads_given) {
        expanse::runtime::set_threads(n).with_context(|| format!("{}: run.threads", a.config.display()))?;
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(config.name()));
    let part = match &a.stage {
        Some(stage) => {
            let shard = match &a.shard {
                Some(s) => Some(s.parse::<Shard>()?),
                None => match (std::env::var("SLURM_ARRAY_TASK_ID"), std::env::var("SLURM_ARRAY_TASK_COUNT")) {
                    (Ok(i), Ok(n)) => Some(
                        format!("{i}/{n}").parse::<Shard>().context("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT")?,
                    ),
                    _ => None,
                },
            };
            Some(RunPart::new(stage, shard, a.shards)?)
        }
        None if a.shard.is_some() || a.shards.is_some() => bail!("--shard and --shards go with --stage"),
        None => None,
    };
    // Refused at once, before the plan reads the inputs (the run would refuse it too).
    let cache = RunOptions { latent_cache: latent_cache(&a), ..Default::default() };
    cache.check().map_err(|e| anyhow::anyhow!("{e} (--latent-cache or EXPANSE_LATENT_CACHE)"))?;
    let sharded = matches!(part, Some(RunPart::InvertShard(_) | RunPart::DecodeShard(_)));
    if !a.dry_run && !sharded {
        expanse::pipeline::check_run_folder(&out, a.resume)?;
    }
    // A shard computes a share of the maps: it takes the domains from the ingested stacks rather
    // than reading every input again.
    let plan =
        if sharded && !a.dry_run { Plan::of_ingested(config, &a.config, &out)? } else { Plan::new(config, &a.config)? };
    if part.is_none() || a.dry_run {
        print!("{}", plan.describe(&out));
    }
    if a.dry_run {
        let t = std::time::Instant::now();
        let model = plan.load_model()?;
        println!("weights: every tensor the model config names loaded ({:.1} s)", t.elapsed().as_secs_f64());
        print!("{}", plan.time_estimate(&model)?.describe());
        return Ok(());
    }
    if let Some(part) = part {
        let opts = RunOptions { resume: a.resume, echo: true, ..cache };
        let outcome = plan.execute_part(&a.config, &out, part, &opts)?;
        if let Some(r) = &outcome.shard {
            println!(
                "{} shard {}/{}: {} batch(es) in {:.1} s",
                r.stage,
                r.index,
                r.count,
                r.batches.len(),
                outcome.seconds
            );
        } else {
            println!("{} stage(s) run, {} kept, {:.1} s", outcome.ran.len(), outcome.kept.len(), outcome.seconds);
        }
        if let Some(summary) = &outcome.summary {
            print!("\n{}", summary.text);
        }
        return Ok(());
    }
    let opts = RunOptions { resume: a.resume, echo: true, ..cache };
    let earlier_run = out.join("manifest.json").is_file();
    let summary = match plan.execute(&a.config, &out, &opts) {
        Ok(s) => s,
        Err(e @ expanse::Error::Refused(_)) => return Err(e.into()),
        Err(e) if earlier_run && !a.resume => return Err(e.into()),
        Err(e) if out.join("manifest.json").is_file() => {
            return Err(anyhow::Error::new(e).context(format!(
                "the run stopped; finished stages are kept in {}: fix the cause and continue with `expanse run {} \
                    --out {} --resume`",
                out.display(),
                a.config.display(),
                out.display()
            )))
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the run did not start; nothing was written")),
    };
    println!();
    print!("{}", summary.text);
    println!(
        "\n{} stage(s) run, {} kept from an earlier invocation, {:.1} s; everything is in {}",
        summary.ran.len(),
        summary.kept.len(),
        summary.seconds,
        summary.dir.display()
    );
    Ok(())
}

/// The latent cache of a run: `--latent-cache`, else $EXPANSE_LATENT_CACHE when set and not empty
/// (see [`RunOptions::check`]).
fn latent_cache(a: &RunArgs) -> Option<PathBuf> {
    a.latent_cache
        .clone()
        .or_else(|| std::env::var_os("EXPANSE_LATENT_CACHE").filter(|v| !v.is_empty()).map(PathBuf::from))
}
