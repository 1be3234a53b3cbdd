//! Invert: a domain's model-space stack to latents by deterministic DDIM, batch by batch with
//! checkpoints, optionally through a latent cache shared between runs.

use std::collections::BTreeMap;

use ndarray::{Array4, Axis};
use serde_json::json;

use crate::diffusion::Ddim;
use crate::error::{Error, Result};
use crate::latents::{self, ModelInput};
use crate::pipeline::manifest::{self, FileHash};
use crate::pipeline::runner::{Reused, Runner, StageOutput};

impl Runner<'_> {
    /// What inversion of domain `d` reads: the model-space stack, the grid, and the key of its
    /// checkpoints.
    pub(in crate::pipeline) fn invert_setup(&mut self, d: &str) -> Result<(ModelInput, Ddim, String)> {
        let stack_path = self.path(&["stacks", &format!("{d}.h5")]);
        let input = latents::read_model_input(&stack_path)?;
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

    pub(in crate::pipeline) fn invert(&mut self, d: &str) -> Result<StageOutput> {
        let (input, ddim, key) = self.invert_setup(d)?;
        let cached = self
            .latent_cache
            .as_ref()
            .map(|dir| dir.join(format!("latents-{}.npy", &self.cache_key(&input, &ddim)[..24])));
        let from_cache: Option<Array4<f32>> =
            cached.as_ref().and_then(|f| crate::io::npy::read_own_array4(f, input.data.dim()));
        let n = input.data.len_of(Axis(0));
        let (z, reused, hit) = match from_cache {
            Some(z) => (z, Reused { batches: 0, maps: n }, true),
            None => {
                let partial = self.partial_dir(&format!("invert/{d}")).expect("inversion checkpoints");
                let steps = (ddim.seq.len() - 1) as u64;
                let (z, reused) =
                    self.checkpointed(&partial, &key, &input.data, &format!("invert {d}"), steps, |r, chunk, pb| {
                        let m = r.model()?;
                        ddim.invert(m, chunk, chunk.len_of(Axis(0)), pb)
                    })?;
                if let Some(f) = &cached {
                    std::fs::create_dir_all(f.parent().expect("cache folder")).map_err(|e| Error::write(f, e))?;
                    let files = crate::io::AtomicFiles::new(std::slice::from_ref(f))?;
                    ndarray_npy::write_npy(files.temp(0), &z).map_err(|e| Error::write(f, e))?;
                    files.commit()?;
                }
                (z, reused, false)
            }
        };
        let records = ddim.records(self.model()?)?;
        let written = latents::write_model_output(
            &self.path(&["latents", &format!("{d}.h5")]),
            &z,
            "run: invert",
            &input,
            records,
        )?;
        let mut counts = BTreeMap::new();
        counts.insert("latents".into(), json!(z.len_of(Axis(0))));
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

    /// What inverted latents depend on, hashed: the model-space data and normalization, the
    /// grid and its options, the model files, dtype and device.
    pub(in crate::pipeline) fn cache_key(&self, input: &ModelInput, ddim: &Ddim) -> String {
        let data: Vec<u8> = input.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = &self.plan.config.model;
        let text = format!(
            "data {}\nshape {:?}\nnormalization {}\ngrid {:?} fixed point {} clip {:?}\nmodel {:?}\ndtype {} device \
                {}\n",
            manifest::sha256_bytes(&data),
            input.data.dim(),
            serde_json::to_string(&input.normalization).unwrap_or_default(),
            ddim.seq,
            ddim.fixed_point,
            ddim.clip,
            self.manifest.model.iter().map(|h| &h.sha256).collect::<Vec<_>>(),
            c.dtype,
            c.device
        );
        manifest::sha256_text(&text)
    }
}
