//! Prior files: HDF5, one group per domain under `/priors/<name>` with datasets `mean` and the
//! covariance parameters, and attributes `kind`, `n`, `d`, `shape`, `provenance` (JSON).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hdf5::types::VarLenUnicode;
use ndarray::Array1;

use super::{spectral, Covariance, Deviations, GaussianPrior, PriorKind};
use crate::error::{Error, Result};
use crate::io::hdf5::put_str;
use crate::io::AtomicFiles;

fn get_str(loc: &hdf5::Location, name: &str) -> hdf5::Result<String> {
    Ok(loc.attr(name)?.read_scalar::<VarLenUnicode>()?.as_str().to_string())
}

/// Writes priors atomically.
pub fn write(path: &Path, priors: &[GaussianPrior], extra: &serde_json::Value) -> Result<Vec<PathBuf>> {
    let files = AtomicFiles::new(&[path.to_path_buf()])?;
    let tmp = files.temp(0);
    let werr = |e: hdf5::Error| Error::write(path, e);
    {
        let f = hdf5::File::create(&tmp).map_err(werr)?;
        put_str(&f, "expanse_version", crate::io::TOOL).map_err(werr)?;
        put_str(&f, "info", &extra.to_string()).map_err(werr)?;
        let root = f.create_group("priors").map_err(werr)?;
        for p in priors {
            let g = root.create_group(&p.name).map_err(werr)?;
            put_str(&g, "kind", &p.kind.to_string()).map_err(werr)?;
            put_str(&g, "provenance", &p.provenance.to_string()).map_err(werr)?;
            g.new_attr::<u64>().create("n").and_then(|a| a.write_scalar(&(p.n as u64))).map_err(werr)?;
            g.new_attr::<u64>().create("d").and_then(|a| a.write_scalar(&(p.dim() as u64))).map_err(werr)?;
            let shape: Vec<u64> = p.shape.iter().map(|&s| s as u64).collect();
            g.new_attr_builder().with_data(&shape).create("shape").map_err(werr)?;
            g.new_dataset_builder().with_data(&p.mean).create("mean").map_err(werr)?;
            match &p.covariance {
                Covariance::Scalar { variance } => {
                    g.new_attr::<f64>().create("variance").and_then(|a| a.write_scalar(variance)).map_err(werr)?;
                }
                Covariance::Diagonal { variances, shrinkage } => {
                    g.new_dataset_builder().with_data(variances).create("variances").map_err(werr)?;
                    g.new_attr::<f64>().create("shrinkage").and_then(|a| a.write_scalar(shrinkage)).map_err(werr)?;
                }
                Covariance::LowRank { directions, eigenvalues, residual } => {
                    g.new_dataset_builder().with_data(directions).create("directions").map_err(werr)?;
                    g.new_dataset_builder().with_data(eigenvalues).create("eigenvalues").map_err(werr)?;
                    g.new_attr::<f64>().create("residual").and_then(|a| a.write_scalar(residual)).map_err(werr)?;
                }
                Covariance::Stationary { spectra, shrinkage } => {
                    g.new_dataset_builder().with_data(&spectra.re).create("spectra_re").map_err(werr)?;
                    g.new_dataset_builder().with_data(&spectra.im).create("spectra_im").map_err(werr)?;
                    g.new_attr::<f64>().create("shrinkage").and_then(|a| a.write_scalar(shrinkage)).map_err(werr)?;
                }
                Covariance::Empirical { deviations: Deviations::Latents(z) } => {
                    g.new_dataset_builder().with_data(z.as_ref()).create("latents").map_err(werr)?;
                }
                Covariance::Empirical { deviations: Deviations::Residuals(r) } => {
                    g.new_dataset_builder().with_data(r).create("residuals").map_err(werr)?;
                }
            }
        }
        f.close().map_err(werr)?;
    }
    files.commit()
}

/// Reads every prior in a file, in name order.
pub fn read(path: &Path) -> Result<Vec<GaussianPrior>> {
    let ferr = |e: hdf5::Error| Error::format(path, format!("not an expanse prior file: {e}")).with_source(e);
    if crate::io::Format::detect(path)? != crate::io::Format::Hdf5 {
        return Err(Error::format(path, "not an expanse prior file (expected HDF5)"));
    }
    let f = hdf5::File::open(path).map_err(ferr)?;
    let root = f.group("priors").map_err(ferr)?;
    let mut names = root.member_names().map_err(ferr)?;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let g = root.group(&name).map_err(ferr)?;
        let kind: PriorKind = get_str(&g, "kind").map_err(ferr)?.parse()?;
        let mean: Array1<f64> = g.dataset("mean").and_then(|d| d.read_1d()).map_err(ferr)?;
        let n = g.attr("n").and_then(|a| a.read_scalar::<u64>()).map_err(ferr)? as usize;
        let shape: Vec<u64> = g.attr("shape").and_then(|a| a.read_raw()).map_err(ferr)?;
        let provenance =
            serde_json::from_str(&get_str(&g, "provenance").map_err(ferr)?).unwrap_or(serde_json::Value::Null);
        let covariance = match kind {
            PriorKind::Scalar => {
                Covariance::Scalar { variance: g.attr("variance").and_then(|a| a.read_scalar()).map_err(ferr)? }
            }
            PriorKind::Diagonal => Covariance::Diagonal {
                variances: g.dataset("variances").and_then(|d| d.read_1d()).map_err(ferr)?,
                shrinkage: g.attr("shrinkage").and_then(|a| a.read_scalar()).map_err(ferr)?,
            },
            PriorKind::LowRank { .. } => Covariance::LowRank {
                directions: g.dataset("directions").and_then(|d| d.read_2d::<f64>()).map_err(ferr)?,
                eigenvalues: g.dataset("eigenvalues").and_then(|d| d.read_1d()).map_err(ferr)?,
                residual: g.attr("residual").and_then(|a| a.read_scalar()).map_err(ferr)?,
            },
            PriorKind::Stationary => {
                let re: ndarray::Array4<f64> =
                    g.dataset("spectra_re").and_then(|d| d.read::<f64, ndarray::Ix4>()).map_err(ferr)?;
                let im: ndarray::Array4<f64> =
                    g.dataset("spectra_im").and_then(|d| d.read::<f64, ndarray::Ix4>()).map_err(ferr)?;
                let spectra_shape = [0, 1, 2].map(|i| shape.get(i).copied().unwrap_or(0) as usize);
                let [c, h, w] = spectra_shape;
                if re.dim() != (h, w, c, c) || im.dim() != re.dim() {
                    return Err(Error::format(
                        path,
                        format!(
                            "prior '{name}': cross-spectra of shape {:?} do not match the latent shape {shape:?}",
                            re.dim()
                        ),
                    ));
                }
                Covariance::Stationary {
                    spectra: spectral::CrossSpectra { shape: spectra_shape, re, im },
                    shrinkage: g.attr("shrinkage").and_then(|a| a.read_scalar()).map_err(ferr)?,
                }
            }
            PriorKind::Empirical => {
                let deviations = if g.link_exists("latents") {
                    Deviations::Latents(Arc::new(g.dataset("latents").and_then(|d| d.read_2d::<f32>()).map_err(ferr)?))
                } else {
                    Deviations::Residuals(g.dataset("residuals").and_then(|d| d.read_2d::<f64>()).map_err(ferr)?)
                };
                if (deviations.nrows(), deviations.ncols()) != (n, mean.len()) || n < 2 {
                    return Err(Error::format(
                        path,
                        format!(
                            "prior '{name}': {} × {} deviations for n = {n} latents of d = {}",
                            deviations.nrows(),
                            deviations.ncols(),
                            mean.len()
                        ),
                    ));
                }
                Covariance::Empirical { deviations }
            }
        };
        if shape.len() != 3 {
            return Err(Error::format(path, format!("prior '{name}': shape attribute must have 3 entries")));
        }
        out.push(GaussianPrior {
            name,
            kind,
            mean,
            covariance,
            n,
            shape: [shape[0] as usize, shape[1] as usize, shape[2] as usize],
            provenance,
        });
    }
    if out.is_empty() {
        return Err(Error::content(path, "the file holds no priors"));
    }
    Ok(out)
}

/// The prior of `domain` in a prior file (the only one when `domain` is None).
pub fn read_domain(path: &Path, domain: Option<&str>) -> Result<GaussianPrior> {
    let mut priors = read(path)?;
    let names = || priors.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    match domain {
        Some(d) => match priors.iter().position(|p| p.name == d) {
            Some(i) => Ok(priors.swap_remove(i)),
            None => Err(Error::content(path, format!("no domain '{d}' (domains: {})", names()))),
        },
        None if priors.len() == 1 => Ok(priors.remove(0)),
        None => Err(Error::content(path, format!("holds {} domains ({}): choose one", priors.len(), names()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::tests::cloud32;

    #[test]
    fn priors_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let z = cloud32(12, 60, 1.0, 0.2, 4);
        let mut priors = Vec::new();
        for (name, kind) in [
            ("a", PriorKind::Scalar),
            ("b", PriorKind::Diagonal),
            ("c", PriorKind::LowRank { k: 3 }),
            ("d", PriorKind::Stationary),
            ("e", PriorKind::Empirical),
        ] {
            let mut p = GaussianPrior::fit(name, &z, [1, 6, 10], kind).unwrap();
            p.provenance = serde_json::json!({"model": "m"});
            priors.push(p);
        }
        // As prior files written before the latents were kept hold it: the deviations themselves.
        let mut legacy = priors[4].clone();
        legacy.name = "f".into();
        legacy.covariance =
            Covariance::Empirical { deviations: Deviations::Residuals(z.mapv(f64::from) - &legacy.mean) };
        priors.push(legacy);
        let path = dir.path().join("p.h5");
        write(&path, &priors, &serde_json::json!({})).unwrap();
        assert_eq!(read(&path).unwrap(), priors);
        assert!(read(&dir.path().join("missing.h5")).is_err());
        // Deviations that do not match the prior's n and d are an error naming the file.
        let mut short = priors[4].clone();
        short.n = 13;
        write(&path, &[short], &serde_json::json!({})).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("p.h5") && e.contains("12 × 60 deviations for n = 13"), "{e}");
    }
}
