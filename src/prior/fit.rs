//! Fitting priors to inverted latents files: one Gaussian per domain, its diagnostics and the
//! separability of the domains, written to a prior file (the `fit` stage and `expanse fit`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diagnostics::{self, DomainDiagnostics, Separability};
use super::file::write;
use super::{GaussianPrior, PriorKind};
use crate::error::{Error, Result};
use crate::io;
use crate::latents;

/// Latents read at a time into the matrix a prior is fitted on.
pub(crate) const READ_BATCH: usize = 64;

/// Priors fitted by [`fit_files`], their diagnostics and the files written.
pub struct FitResult {
    pub priors: Vec<GaussianPrior>,
    pub diagnostics: Vec<DomainDiagnostics>,
    pub separability: Option<Separability>,
    pub written: Vec<PathBuf>,
}

/// Fits one prior per domain (name, latents file), writes the prior file `out` and, beside it,
/// `<stem>.diagnostics.json` and `<stem>.diagnostics.png/.svg`. Latents paths inside `relative_to` (a run folder) are
/// recorded relative to it.
pub fn fit_files(
    domains: &[(String, PathBuf)],
    kind: PriorKind,
    out: &Path,
    relative_to: Option<&Path>,
) -> Result<FitResult> {
    let mut priors: Vec<GaussianPrior> = Vec::new();
    let mut mats = Vec::new();
    for (name, path) in domains {
        if priors.iter().any(|p| &p.name == name) {
            return Err(Error::Invalid(format!(
                "two domains are named '{name}' (name them with --names or [[domain]] name)"
            )));
        }
        let input = latents::StackFile::open(path)?;
        let (_, c, h, w) = input.dim;
        let z = Arc::new(input.to_matrix(READ_BATCH)?);
        let mut prior = GaussianPrior::fit(name, &z, [c, h, w], kind).map_err(|e| match e {
            Error::Invalid(m) => Error::content(path, m),
            other => other,
        })?;
        prior.provenance = serde_json::json!({
            "latents": crate::io::shown_path(path, relative_to),
            "records": input.provenance.as_ref().map(|p| serde_json::to_value(&p.records).unwrap_or_default()),
        });
        priors.push(prior);
        mats.push(z);
    }
    let diags: Vec<DomainDiagnostics> = priors.iter().zip(&mats).map(|(p, z)| diagnostics::domain(p, z)).collect();
    let same_d = priors.iter().all(|p| p.dim() == priors[0].dim());
    let latents: Vec<&ndarray::Array2<f32>> = mats.iter().map(|z| z.as_ref()).collect();
    let sep = if same_d { diagnostics::separability(&priors, &latents) } else { None };
    let report = serde_json::json!({"domains": diags, "separability": sep, "tool": io::TOOL});
    let mut written = write(out, &priors, &serde_json::json!({"kind": kind.to_string()}))?;
    let json = serde_json::to_string_pretty(&report).expect("diagnostics serialize");
    written.push(io::write_text(&io::with_suffix(out, ".diagnostics.json"), &json)?);
    written.extend(diagnostics::figure(&diags, kind).save(&io::with_suffix(out, ".diagnostics"))?);
    Ok(FitResult { priors, diagnostics: diags, separability: sep, written })
}
