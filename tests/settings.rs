//! A command-line flag and the run-config key of the same name are one setting, checked by one
//! function: both refuse the same values with the same words, the flag's error naming the flag
//! (`--beam-fwhm: …`), the config's naming the file and the dotted key (`validation.beam_fwhm: …`).

mod common;
use common::{expanse, root, sample};

/// The config key's error for `section` (TOML) added to a minimal run config.
fn config_error(dir: &std::path::Path, section: &str, domain: &str) -> String {
    let text = format!(
        "[model]\npath = \"{}\"\n{section}\n[[domain]]\nname = \"clouds\"\ninputs = [\"{}\"]\n{domain}\n",
        root().join("data/models/expanse-natural-32").display(),
        sample("clouds_64.fits").display(),
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = expanse(&["run", path.to_str().unwrap(), "--dry-run"]);
    assert!(!out.status.success(), "{section}{domain}: the config was accepted");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(err.contains("c.toml"), "the config's error names the file: {err}");
    err
}

fn cli_error(args: &[&str]) -> String {
    let out = expanse(args);
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// A command, a flag with its value, the config section and domain keys of the same value, and
/// the config's dotted key.
type Case<'a> = (&'a [&'a str], Vec<&'a str>, &'a str, &'a str, &'a str);

#[test]
fn a_flag_and_its_config_key_refuse_the_same_values_in_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let maps = sample("clouds_64.fits").display().to_string();
    let model = root().join("data/models/expanse-natural-32").display().to_string();
    let out = dir.path().join("never");
    let out = out.to_str().unwrap();
    let missing = dir.path().join("missing.npy").display().to_string();
    let ps = ["power-spectrum", &maps, "--out", out];
    let validate = ["validate", "--real", &maps, "--synthetic", &maps, "--out", out];
    let ingest = ["ingest", &maps, "--out", out];
    let refine = ["refine", "--real", &maps, "--synthetic", &maps, "--out", out];
    let sample_cmd =
        ["sample", "--model", &model, "--prior", &missing, "--latents", &missing, "--out", out, "--count", "4"];
    let invert = ["invert", "--model", &model, "--input", &missing, "--out", out];
    let fit = ["fit", "--latents", &missing, "--out", out];
    let cases: Vec<Case> = vec![
        (&ps, vec!["--beam-fwhm", "-2"], "[validation]\nbeam_fwhm = -2.0", "", "validation.beam_fwhm"),
        (&ps, vec!["--fit-range", "0.3:0.1"], "[validation]\nfit_range = [0.3, 0.1]", "", "validation.fit_range"),
        (&ps, vec!["--apodize", "cosine"], "[validation]\napodize = \"cosine\"", "", "validation.apodize"),
        (&validate, vec!["--c2st-folds", "1"], "[validation]\nc2st_folds = 1", "", "validation.c2st_folds"),
        (&validate, vec!["--statistics", "nope"], "[validation]\nstatistics = [\"nope\"]", "", "validation.statistics"),
        (&validate, vec!["--thresholds", "3:1:5"], "[validation]\nthresholds = \"3:1:5\"", "", "validation.thresholds"),
        (&validate, vec!["--resamples", "3"], "[validation]\nresamples = 3", "", "validation.resamples"),
        (&ingest, vec!["--transform", "sqrt"], "", "transform = \"sqrt\"", "domain[0].transform"),
        (&ingest, vec!["--max-blank", "2"], "", "max_blank = 2.0", "domain[0].max_blank"),
        (&ingest, vec!["--tile", "0"], "", "tile = \"0\"", "domain[0].tile"),
        (&refine, vec!["--angles", "0"], "[refinement]\nangles = 0", "", "refinement.angles"),
        (&sample_cmd, vec!["--band", "60,50"], "[sampling]\nband = [60.0, 50.0]", "", "sampling.band"),
        (&sample_cmd, vec!["--tests", "angle"], "[sampling]\ntests = [\"angle\"]", "", "sampling.tests"),
        (&sample_cmd, vec!["--k", "1"], "[sampling]\nk = 1", "", "sampling.k"),
        (&sample_cmd, vec!["--budget", "2"], "[sampling]\ncount = 4\nbudget = 2", "", "sampling.budget"),
        (&sample_cmd, vec!["--candidates", "beam"], "[sampling]\ncandidates = \"beam\"", "", "sampling.candidates"),
        (&sample_cmd, vec!["--norm", "fixed"], "[sampling]\nnorm = \"fixed\"", "", "sampling.norm"),
        (&sample_cmd, vec!["--debias", "always"], "[sampling]\ndebias = \"always\"", "", "sampling.debias"),
        (&fit, vec!["--kind", "full"], "[prior]\nkind = \"full\"", "", "prior.kind"),
        (&invert, vec!["--steps", "20", "--t0", "10"], "[inversion]\nsteps = 20\nt0 = 10", "", "inversion.steps"),
        (&invert, vec!["--clip", "-1"], "[inversion]\nclip = -1.0", "", "inversion.clip"),
        (&invert, vec!["--batch", "0"], "batch = 0", "", "model.batch"),
    ];
    for (command, flag, section, domain, key) in cases {
        let args: Vec<&str> = command.iter().copied().chain(flag.iter().copied()).collect();
        let cli = cli_error(&args);
        let flag_name = key.rsplit('.').next().unwrap().replace('_', "-");
        let cli_cause = cli
            .strip_prefix(&format!("error: --{flag_name}: "))
            .unwrap_or_else(|| panic!("{flag:?}: the error names the flag first: {cli}"));
        assert_eq!(cli.lines().count(), 1, "one error line: {cli}");
        // The section follows the `[model]` table's path: a bare key is a key of [model].
        let config = config_error(dir.path(), section, domain);
        let config_cause = config
            .split_once(&format!("{key}: "))
            .unwrap_or_else(|| panic!("{key}: the config's error names the key: {config}"))
            .1;
        assert_eq!(cli_cause, config_cause, "{flag:?} and {key} give one cause");
        assert!(!std::path::Path::new(out).exists(), "{flag:?}: nothing written");
    }
}
