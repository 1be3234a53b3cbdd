//! Commands on latents: fit priors, sample and decode synthetic maps.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::args::*;
use expanse::error::Error;
use expanse::latents;
use expanse::prior::geometry;
use expanse::prior::{diagnostics, file as prior_file, PriorKind};
use expanse::synthesis;

use super::models::{batches, load_model, progress};

pub fn run_fit(a: FitArgs) -> Result<()> {
    let kind: PriorKind = keyword("kind", &a.kind)?;
    if let Some(n) = &a.names {
        if n.len() != a.latents.len() {
            bail!("--names has {} name(s) for {} latents file(s)", n.len(), a.latents.len());
        }
    }
    let domains: Vec<(String, PathBuf)> = a
        .latents
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = match &a.names {
                Some(n) => n[i].clone(),
                None => {
                    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("domain{i}"))
                }
            };
            (name, path.clone())
        })
        .collect();
    let fitted = expanse::prior::fit::fit_files(&domains, kind, &a.out, None)?;
    print!("{}", diagnostics::table(&fitted.diagnostics, fitted.separability.as_ref()));
    for w in fitted.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

pub fn run_sample(a: SampleArgs) -> Result<()> {
    let spec = a.section()?.spec(a.seed).map_err(Error::flag)?;
    if a.domain.is_none() {
        let names: Vec<String> = prior_file::read(&a.prior)?.into_iter().map(|p| p.name).collect();
        if names.len() > 1 {
            bail!(
                "{} holds {} domains ({}): choose one with --domain",
                a.prior.display(),
                names.len(),
                names.join(", ")
            );
        }
    }
    let prior = prior_file::read_domain(&a.prior, a.domain.as_deref())?;
    let input = latents::StackFile::open(&a.latents)?;
    // The model and grid are checked before sampling, so that nothing is written when they do
    // not fit the latents.
    geometry::check_dimension(&prior, input.dim.1 * input.dim.2 * input.dim.3)
        .with_context(|| format!("sampling domain '{}'", prior.name))?;
    let ddpm = load_model(&a.model)?;
    let [c, h, w] = prior.shape;
    ddpm.check_input(c, h, w)?;
    // The accepted latents carry the real latents' grid record, so this is their grid too.
    let ddim = synthesis::grid_of(&ddpm, input.provenance.as_ref(), &a.latents, None)?;
    let t = std::time::Instant::now();
    let latents_out = expanse::io::with_suffix(&a.out, ".latents.npy");
    let (outcome, mut written) = synthesis::sample(&prior, &a.prior, &input, &spec, &latents_out, "sample")
        .with_context(|| format!("sampling domain '{}'", prior.name))?;
    let (_, all) = outcome.rates();
    println!(
        "accepted {} of {} candidates ({:.1} %; {}) in {:.1} s",
        outcome.accepted.nrows(),
        outcome.tried,
        100.0 * all,
        outcome.rates_text(),
        t.elapsed().as_secs_f64()
    );
    let accepted = latents::read_model_input(&latents_out)?;
    let pb = progress(ddim.seq.len() as u64 * batches(a.count, a.model.batch), "decode");
    let images = ddim.generate(&ddpm, &accepted.data, 0.0, 0, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let (files, physical) = synthesis::write_synthetic(
        std::slice::from_ref(&a.out),
        &images,
        "sample",
        &accepted,
        synthesis::SyntheticRecords { ddim: &ddim, model: &ddpm, extra: vec![], fits_cards: vec![] },
    )?;
    written.extend(files);
    let label = if physical { "physical units" } else { "model space (the latents carry no normalization)" };
    println!("decoded {} map(s) into {label}", a.count);
    for w in written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

pub fn run_refine(a: RefineArgs) -> Result<()> {
    let options = a.section().options().map_err(Error::flag)?;
    let r = synthesis::refine_files(&a.real, &a.synthetic, &a.selection.selection()?, &a.out, &options)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "refined {} map(s) on {} wavelet moments ({} scales, {} angles) in {:.1} s: loss {:.4} -> {:.4} \
            (mean squared distance to the targets in real-map σ)",
        r.loss_after.len(),
        r.moments,
        r.scales,
        a.angles,
        r.seconds,
        mean(&r.loss_before),
        mean(&r.loss_after)
    );
    println!("wrote {}", a.out.display());
    Ok(())
}
