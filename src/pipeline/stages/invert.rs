//! Invert: a domain's model-space stack to latents by deterministic DDIM, batch by batch with
//! checkpoints, optionally through a latent cache shared between runs.

use std::collections::BTreeMap;

use ndarray::Axis;
use serde_json::json;
use sha2::Digest;

use crate::diffusion::Ddim;
use crate::error::{Error, Result};
use crate::latents::{StackFile, StackWriter};
use crate::pipeline::manifest::{self, FileHash};
use crate::pipeline::runner::{Reused, Runner, StageOutput};

impl Runner<'_> {
    /// What inversion of domain `d` reads: the model-space stack (opened, not read), the grid, and
    /// the key of its checkpoints.
    pub(in crate::pipeline) fn invert_setup(&mut self, d: &str) -> Result<(StackFile, Ddim, String)> {
        let stack_path = self.path(&["stacks", &format!("{d}.h5")]);
        let input = StackFile::open(&stack_path)?;
        let ddim = self.ddim()?;
        let key = format!(
            "{}\ngrid {:?} fixed point {} clip {:?}\nbatch {}\n",
            FileHash::of(&stack_path, &stack_path)?.sha256,
            ddim.seq,
            ddim.fixed_point,
            ddim.clip,
            self.plan.config.model.batch
        );
        Ok((input, ddim, key))
    }

    /// Inverts domain `d` a batch at a time, from the stack on disk to the latents file on disk
    /// (through the latent cache when there is one): memory holds a batch, whatever the count.
    pub(in crate::pipeline) fn invert(&mut self, d: &str) -> Result<StageOutput> {
        let (input, ddim, key) = self.invert_setup(d)?;
        let cached = match &self.latent_cache {
            Some(dir) => Some(dir.join(format!("latents-{}.npy", &self.cache_key(&input, &ddim)?[..24]))),
            None => None,
        };
        let from_cache = cached.as_ref().and_then(|f| StackFile::open(f).ok().filter(|c| c.dim == input.dim));
        let records = ddim.records(self.model()?)?;
        let out = self.path(&["latents", &format!("{d}.h5")]);
        let mut latents = StackWriter::create(&out, input.dim, "run: invert", &input, records)?;
        let n = input.dim.0;
        let batch = self.plan.config.model.batch;
        let (reused, hit) = match from_cache {
            Some(cache) => {
                for rows in cache.batches(batch) {
                    let (start, z) = rows?;
                    latents.write(start, &z)?;
                }
                (Reused { batches: 0, maps: n }, true)
            }
            None => {
                let mut to_cache = match &cached {
                    Some(f) => {
                        std::fs::create_dir_all(f.parent().expect("cache folder")).map_err(|e| Error::write(f, e))?;
                        let files = crate::io::AtomicFiles::new(std::slice::from_ref(f))?;
                        let rows = crate::io::npy::NpyRowWriter::create(&files.temp(0), input.dim)
                            .map_err(|e| crate::io::retarget(e, f))?;
                        Some((files, rows))
                    }
                    None => None,
                };
                let partial = self.partial_dir(&format!("invert/{d}")).expect("inversion checkpoints");
                let steps = (ddim.seq.len() - 1) as u64;
                let what = format!("invert {d}");
                let reused = self.checkpointed(
                    &partial,
                    &key,
                    &input,
                    &what,
                    steps,
                    |r, chunk, pb| {
                        let m = r.model()?;
                        ddim.invert(m, chunk, chunk.len_of(Axis(0)), pb)
                    },
                    |start, z| {
                        latents.write(start, &z)?;
                        if let Some((_, rows)) = &mut to_cache {
                            rows.write(start, &z.view())?;
                        }
                        Ok(())
                    },
                )?;
                if let Some((files, rows)) = to_cache {
                    rows.finish()?;
                    files.commit()?;
                }
                (reused, false)
            }
        };
        let written = latents.finish()?;
        let mut counts = BTreeMap::new();
        counts.insert("latents".into(), json!(n));
        counts.insert(
            "unet_evaluations".into(),
            json!(reused.evaluations_done(self.plan.unet_evaluations(&format!("invert/{d}")), n)),
        );
        counts.insert("batches_from_checkpoints".into(), json!(reused.batches));
        if cached.is_some() {
            counts.insert("from_latent_cache".into(), json!(hit));
        }
        Ok((written, counts))
    }

    /// What inverted latents depend on, hashed: the model-space data (read a batch at a time) and
    /// normalization, the grid and its options, the model files, dtype and device.
    pub(in crate::pipeline) fn cache_key(&self, input: &StackFile, ddim: &Ddim) -> Result<String> {
        let mut data = sha2::Sha256::new();
        for rows in input.batches(self.plan.config.model.batch) {
            let (_, rows) = rows?;
            let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
            data.update(&bytes);
        }
        let c = &self.plan.config.model;
        let text = format!(
            "data {}\nshape {:?}\nnormalization {}\ngrid {:?} fixed point {} clip {:?}\nmodel {:?}\ndtype {} device \
                {}\n",
            manifest::hex(&data.finalize()),
            input.dim,
            serde_json::to_string(&input.normalization).unwrap_or_default(),
            ddim.seq,
            ddim.fixed_point,
            ddim.clip,
            self.manifest.model.iter().map(|h| &h.sha256).collect::<Vec<_>>(),
            c.dtype,
            c.device
        );
        Ok(manifest::sha256_text(&text))
    }
}
