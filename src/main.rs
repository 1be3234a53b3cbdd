//! The `expanse` command line: a thin clap layer over the library.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::args::*;
use cli::maps::*;
use cli::models::*;
use cli::runs::*;
use cli::sampling::*;
use expanse::error::Error;
use expanse::pipeline::config::ValidationSection;
use expanse::stats::battery::Statistic;

/// Grow a handful of astrophysical maps into many statistically faithful synthetic maps with a
/// frozen diffusion model (Zhu et al. 2023, arXiv 2310.09213).
#[derive(Parser)]
#[command(name = "expanse", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else every core). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the HDUs or datasets of files: shapes, types, units, NaN fraction, min and max.
    Inspect(InspectArgs),
    /// Read maps from FITS/HDF5/NPY files and write one stack, raw or normalized for the model.
    Ingest(IngestArgs),
    /// Simulate lognormal column-density maps of turbulent clouds (the sample data).
    Simulate(SimulateArgs),
    /// One forward pass of the UNet: raw model output for a (B, C, H, W) array at one timestep.
    UnetEval(UnetEvalArgs),
    /// Deterministic DDIM inversion: model-space maps → latents at level t0.
    Invert(InvertArgs),
    /// DDIM generation: latents at level t0 → model-space maps.
    Generate(GenerateArgs),
    /// Invert then generate, reporting per-map MSE and PSNR (model space, data range 2).
    Reconstruct(ReconstructArgs),
    /// Time UNet evaluations (and report peak memory) on random inputs: the numbers in BENCHMARKS.md.
    Bench(BenchArgs),
    /// Fit one Gaussian prior per domain (one latents file each) and write diagnostics.
    Fit(FitArgs),
    /// Draw latents from a prior, keep those that pass the geometric tests, decode them to maps.
    Sample(SampleArgs),
    /// Refine synthetic maps toward real maps' wavelet moments (L-BFGS per map; the run's
    /// `[refinement]` stage as a command).
    Refine(RefineArgs),
    /// Radial power spectrum with TurbuStat's conventions and its power-law fit.
    PowerSpectrum(PowerSpectrumArgs),
    /// Minkowski functionals V0, V1, V2 of standardized maps over thresholds ν (CSV, averaged over the maps).
    Minkowski(MinkowskiArgs),
    /// Densities of local maxima and minima by height in σ (CSV, averaged over the maps).
    Peaks(PeaksArgs),
    /// Bicoherence profile with TurbuStat's `Bispectrum` conventions (CSV, averaged over the maps).
    Bispectrum(BispectrumArgs),
    /// Isotropic wavelet-scattering coefficients with kymatio's transform (CSV, averaged over the maps).
    Scattering(ScatteringArgs),
    /// Compare real and synthetic maps: power spectra, PDFs, the battery of statistics (Minkowski,
    /// peaks, bispectrum, scattering) with bootstrap bands, memorization; report + figures.
    Validate(ValidateArgs),
    /// Write a commented run config for a set of maps (reads them to choose the normalization
    /// and geometry; every other key at its default).
    Init(InitArgs),
    /// Every stage from one TOML config (ingest → invert → fit → sample → decode → validate) in
    /// one run folder, resumable.
    Run(RunArgs),
    /// Write (and with --submit, submit) the Slurm jobs of a run: ingest, an inversion job array,
    /// fit + sample, a decoding job array, validate; each after the previous one succeeded.
    Slurm(SlurmArgs),
    /// The fidelity benchmark: every variant × seed of a benchmark config as a run, and the table of per-map statistics
    /// against the targets
    Fidelity(FidelityArgs),
}

fn main() -> ExitCode {
    // A glibc that refuses the thresholds only loses the speed-up BENCHMARKS.md measures.
    let _ = expanse::runtime::keep_freed_memory();
    let cli = Cli::parse();
    let threads = match cli.threads.map(expanse::runtime::set_threads).transpose() {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("--threads")),
    };
    let result = threads.and_then(|_| match cli.command {
        Command::Inspect(a) => run_inspect(a),
        Command::Ingest(a) => run_ingest(a),
        Command::Simulate(a) => run_simulate(a),
        Command::UnetEval(a) => run_unet_eval(a),
        Command::Invert(a) => run_invert(a),
        Command::Generate(a) => run_generate(a),
        Command::Reconstruct(a) => run_reconstruct(a),
        Command::Bench(a) => run_bench(a),
        Command::Fit(a) => run_fit(a),
        Command::Sample(a) => run_sample(a),
        Command::Refine(a) => run_refine(a),
        Command::PowerSpectrum(a) => run_power_spectrum(a),
        Command::Minkowski(a) => {
            let section = ValidationSection { thresholds: Some(a.thresholds), ..Default::default() };
            run_statistic(Statistic::Minkowski, section, &a.common)
        }
        Command::Peaks(a) => {
            let section = ValidationSection { peak_edges: a.peak_edges, ..Default::default() };
            run_statistic(Statistic::Peaks, section, &a.common)
        }
        Command::Bispectrum(a) => {
            let section = ValidationSection { bispectrum_samples: a.bispectrum_samples, ..Default::default() };
            let mut o = section.battery_options().map_err(Error::flag)?;
            o.bispectrum.seed = a.seed.unwrap_or(o.bispectrum.seed);
            o.bispectrum.mean_subtract = a.mean_subtract;
            run_statistic_with(Statistic::Bispectrum, o, &a.common)
        }
        Command::Scattering(a) => {
            let section =
                ValidationSection { scattering_j: a.scattering_j, scattering_l: a.scattering_l, ..Default::default() };
            run_statistic(Statistic::Scattering, section, &a.common)
        }
        Command::Validate(a) => run_validate(a),
        Command::Init(a) => run_init(a),
        Command::Run(a) => run_run(a, cli.threads.is_some()),
        Command::Slurm(a) => run_slurm(a),
        Command::Fidelity(a) => run_fidelity(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", expanse::error::chain_message(&*e));
            ExitCode::FAILURE
        }
    }
}
