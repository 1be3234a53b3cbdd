//! Commands on maps: inspect, ingest, simulate, the power spectrum and the battery statistics, validate.

use anyhow::{bail, Context, Result};

use super::args::*;
use expanse::error::Error;
use expanse::ingest::{self, IngestOptions};
use expanse::inspect::{self, fmt_num};
use expanse::pipeline::config::ValidationSection;
use expanse::prep::{PrepOptions, PrepSpec};
use expanse::simulate::{self, CloudSpec};
use expanse::stats::battery::{BatteryOptions, Statistic};
use expanse::stats::power_spectrum::EnsembleSpectrum;

pub fn run_inspect(a: InspectArgs) -> Result<()> {
    let reports = inspect::inspect_all(&a.files)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", inspect::render(&reports));
    }
    Ok(())
}

pub fn prep_spec(a: &IngestArgs) -> Result<PrepSpec> {
    PrepSpec::parse(&PrepOptions {
        transform: &a.transform,
        range: &a.range,
        offset: a.offset,
        softening: a.softening,
        crop: a.crop.as_deref(),
        tile: a.tile.as_deref(),
        size: a.size,
        channels: a.channels,
        band_map: a.band_map.as_deref(),
        max_blank: a.max_blank,
    })
    .map_err(|e| e.flag().into())
}

pub fn run_ingest(a: IngestArgs) -> Result<()> {
    let selection = a.selection.selection()?;
    if a.raw {
        let shaped =
            a.crop.is_some() || a.tile.is_some() || a.size.is_some() || a.band_map.is_some() || a.channels != 1;
        let scaled = a.transform != "linear" || a.range != "minmax" || a.offset.is_some() || a.softening.is_some();
        if shaped || scaled {
            bail!("--raw writes the maps exactly as read: drop the transform, geometry and channel options");
        }
    }
    let opts = IngestOptions {
        selection,
        raw: a.raw,
        prep: prep_spec(&a)?,
        preview: a.preview.clone(),
        max_maps: a.max_maps,
        real: None,
    };
    let report = ingest::ingest(&a.inputs, &opts, &a.out)
        .map_err(Error::flag)
        .with_context(|| format!("ingest into {} failed; nothing was written", a.out.display()))?;
    for s in &report.inputs {
        println!(
            "read {:<48} {:>3} map(s) {}x{}  units {:<8} NaN {:.2}%  min {}  max {}",
            s.source,
            s.maps,
            s.shape[0],
            s.shape[1],
            s.units.as_deref().unwrap_or("-"),
            100.0 * s.stats.nan_fraction,
            s.stats.min.map(fmt_num).unwrap_or_else(|| "-".into()),
            s.stats.max.map(fmt_num).unwrap_or_else(|| "-".into()),
        );
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if let Some(n) = &report.normalization {
        println!("normalization: {}", n.transform.describe());
        if report.blank_pixels > 0 {
            println!(
                "blank pixels: {} (filled with the domain median {} = {:.4} in model space; mask written)",
                report.blank_pixels,
                fmt_num(n.fill),
                n.fill_model
            );
        }
    }
    let shape = report.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    for w in &report.written {
        println!("wrote {}", w.display());
    }
    println!("stack shape ({shape}){}", if a.raw { ", raw float32" } else { ", model space float32" });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

pub fn run_simulate(a: SimulateArgs) -> Result<()> {
    let spec =
        CloudSpec { count: a.count, size: a.size, beta: a.beta, sigma_ln: a.sigma_ln, mean: a.mean, seed: a.seed };
    let written = simulate::write_clouds(&spec, &a.out).context("simulate failed; nothing was written")?;
    for w in written {
        println!(
            "wrote {} ({} lognormal maps of {}x{}, beta {}, sigma_ln {}, seed {})",
            w.display(),
            a.count,
            a.size,
            a.size,
            a.beta,
            a.sigma_ln,
            a.seed
        );
    }
    Ok(())
}

pub fn run_power_spectrum(a: PowerSpectrumArgs) -> Result<()> {
    let opts = a.spectrum.section()?.spectrum_options().map_err(Error::flag)?;
    let (maps, _) = ingest::read_inputs(&a.maps, &a.selection.selection()?)?;
    let stack = expanse::io::stack(&maps)?;
    let arrays: Vec<ndarray::Array2<f64>> = stack.outer_iter().map(|m| m.mapv(|v| v as f64)).collect();
    let ens = EnsembleSpectrum::compute(&arrays, &opts)?;
    let ps = &ens.mean;
    let mut targets = vec![a.out.clone()];
    targets.extend(a.summary.clone());
    let files = expanse::io::AtomicFiles::new(&targets)?;
    std::fs::write(files.temp(0), ens.csv())?;
    if a.summary.is_some() {
        std::fs::write(files.temp(1), serde_json::to_string_pretty(&ens.summary())?)?;
    }
    for w in files.commit()? {
        println!("wrote {}", w.display());
    }
    println!(
        "slope {:.4} ± {:.4} over {:.4} < k <= {:.4} ({} map(s), {} bins)",
        ps.slope,
        ps.slope_err,
        ps.low_cut,
        ps.high_cut,
        arrays.len(),
        ps.nbins()
    );
    Ok(())
}

/// One statistic of the battery with the options of a `[validation]` section given as flags.
pub fn run_statistic(statistic: Statistic, section: ValidationSection, a: &StatisticArgs) -> Result<()> {
    run_statistic_with(statistic, section.battery_options().map_err(Error::flag)?, a)
}

pub fn run_statistic_with(statistic: Statistic, options: BatteryOptions, a: &StatisticArgs) -> Result<()> {
    let values = expanse::validate::statistic_of_files(statistic, &options, &a.maps, &a.selection.selection()?)?;
    let files = expanse::io::AtomicFiles::new(std::slice::from_ref(&a.out))?;
    std::fs::write(files.temp(0), values.csv()).with_context(|| format!("writing {}", a.out.display()))?;
    for w in files.commit()? {
        println!("wrote {}", w.display());
    }
    println!("{} of {} map(s)", statistic.title(), values.values.len());
    Ok(())
}

pub fn run_validate(a: ValidateArgs) -> Result<()> {
    let opts = a.battery.section(&a.spectrum)?.battery_options().map_err(Error::flag)?;
    let r = expanse::validate::validate(&a.real, &a.synthetic, &a.selection.selection()?, &a.out, &opts, None)?;
    println!(
        "per-map power-spectrum slopes: real {:.3} ± {:.3}, synthetic {:.3} ± {:.3} (Welch t = {:.2})",
        r.slopes.real.mean, r.slopes.real.std, r.slopes.synthetic.mean, r.slopes.synthetic.std, r.slopes.welch_t
    );
    println!(
        "ensemble slope (physical units): real {:.3} ± {:.3}, synthetic {:.3} ± {:.3} (distance t = {:.2})",
        r.spectrum_real.slope,
        r.spectrum_real.slope_err,
        r.spectrum_synthetic.slope,
        r.spectrum_synthetic.slope_err,
        r.spectrum_distance
    );
    println!(
        "{}: level spread {}{:.2} (68 %: {:.2}–{:.2}); PDF Hellinger {:.4} ± {:.4} (real halves {:.4}), {:.2} % \
            of synthetic pixels outside the real range",
        r.scale,
        if r.level.per_contrast { "in units of the maps' std (the real levels are all equal) " } else { "ratio " },
        r.level.ratio,
        r.level.ratio_interval.0,
        r.level.ratio_interval.1,
        r.pdf.hellinger,
        r.pdf.hellinger_std,
        r.pdf.hellinger_real_halves,
        100.0 * r.pdf.synthetic_outside
    );
    if let Some(b) = &r.battery {
        for st in &b.statistics {
            println!(
                "{}: χ²/dof {:.2} ± {:.2} (real halves {:.2}), D {:.3} ± {:.3} real-map σ ({:.2} s)",
                st.statistic.title(),
                st.chi2.value,
                st.chi2.std,
                st.chi2_real_halves,
                st.distance.value,
                st.distance.std,
                st.seconds
            );
        }
        println!(
            "battery overall: χ²/dof {:.2} ± {:.2}, D {:.3} ± {:.3}",
            b.chi2.value, b.chi2.std, b.distance.value, b.distance.std
        );
        if let Some(c) = &b.c2st {
            let show = |a: &Option<expanse::stats::c2st::C2stAccuracy>| match a {
                Some(a) => format!("{:.3} ± {:.3}", a.mean, a.std),
                None => "not available".into(),
            };
            println!(
                "C2ST (logistic regression on the battery's curves): accuracy {} (real halves {}; 0.5 = cannot tell)",
                show(&c.accuracy),
                show(&c.real_halves)
            );
            for n in &c.not_available {
                println!("C2ST: {n}");
            }
        }
    }
    println!(
        "memorization: ratio {:.3} (closest synthetic–real / closest real–real); {} of {} synthetic map(s) flagged as \
            near-copies ({:.2} s)",
        r.memorization.ratio,
        r.memorization.flagged.len(),
        r.n_synthetic,
        r.memorization.seconds
    );
    println!("verdict: {}", r.verdict.headline());
    for line in r.verdict.lines() {
        println!("  {line}");
    }
    for w in &r.verdict.warnings {
        println!("warning: {w}");
    }
    for w in &r.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}
