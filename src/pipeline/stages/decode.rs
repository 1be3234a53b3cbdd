//! Decode: the accepted latents to synthetic maps in physical units, batch by batch with
//! checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{s, Array4, Axis};
use serde_json::json;

use crate::diffusion::Ddim;
use crate::error::Result;
use crate::latents::StackFile;
use crate::pipeline::manifest::FileHash;
use crate::pipeline::runner::{Runner, StageOutput};

impl Runner<'_> {
    /// What decoding of domain `d` reads: the accepted latents (opened, not read), the grid (with
    /// the decoding clip), and the key of its checkpoints.
    pub(in crate::pipeline) fn decode_setup(&mut self, d: &str) -> Result<(StackFile, Ddim, String)> {
        let latents_path = self.path(&["samples", &format!("{d}.latents.npy")]);
        let input = StackFile::open(&latents_path)?;
        let inv = &self.plan.config.inversion;
        let clip = inv.decode_clip.or(inv.clip);
        let ddim = crate::synthesis::grid_of(self.model()?, input.provenance.as_ref(), &latents_path, clip)?;
        let key = format!(
            "{}\n{:?} clip {:?}\nbatch {}\n",
            FileHash::of(&latents_path, &latents_path)?.sha256,
            ddim.seq,
            ddim.clip,
            self.plan.config.model.batch
        );
        Ok((input, ddim, key))
    }

    pub(in crate::pipeline) fn decode(&mut self, d: &str) -> Result<StageOutput> {
        let (input, ddim, key) = self.decode_setup(d)?;
        let partial = self.partial_dir(&format!("decode/{d}")).expect("decoding checkpoints");
        let steps = ddim.seq.len() as u64;
        let mut images = Array4::<f32>::zeros(input.dim);
        let reused = self.checkpointed(
            &partial,
            &key,
            &input,
            &format!("decode {d}"),
            steps,
            |r, chunk, pb| {
                let m = r.model()?;
                ddim.generate(m, chunk, 0.0, 0, chunk.len_of(Axis(0)), pb)
            },
            |start, out| {
                images.slice_mut(s![start..start + out.len_of(Axis(0)), .., .., ..]).assign(&out);
                Ok(())
            },
        )?;
        let paths: Vec<PathBuf> =
            self.plan.config.run.formats.iter().map(|f| self.path(&["samples", &format!("{d}.{f}")])).collect();
        let mut records = vec![("run", json!({"name": self.plan.config.name(), "seed": self.plan.config.run.seed}))];
        let mut counts = BTreeMap::new();
        let options = self.plan.config.refinement.options()?;
        if options.iterations > 0 {
            let real = StackFile::open(&self.path(&["stacks", &format!("{d}.h5")]))?;
            let real = crate::synthesis::channel_means_of(&real)?;
            let record;
            (images, record) = crate::synthesis::refine_images_owned(images, real, &options)?;
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            counts.insert("refinement_loss_before".into(), json!(mean(&record.loss_before)));
            counts.insert("refinement_loss_after".into(), json!(mean(&record.loss_after)));
            counts.insert("refinement_seconds".into(), json!(record.seconds));
            self.log.line(&format!(
                "decode/{d}: refined {} maps on {} wavelet moments in {:.1} s (loss {:.3} -> {:.3})",
                record.loss_after.len(),
                record.moments,
                record.seconds,
                mean(&record.loss_before),
                mean(&record.loss_after)
            ))?;
            records.push(("refinement", serde_json::to_value(&record).expect("record serializes")));
        }
        // The real maps' pixel scale (when their grid is the inputs' or a cut of it), no sky position:
        // a synthetic map sits nowhere on the sky.
        let real = self.real_path(d);
        let cards = match crate::io::Format::from_extension(&real) {
            // The header of the HDU the maps are read from (the first image), not the maps.
            Ok(crate::io::Format::Fits) => crate::io::fits::list_hdus(&real)?
                .into_iter()
                .find(|h| h.kind == "image" && !h.shape.is_empty())
                .map(|h| crate::io::fits::pixel_scale_cards(&h.cards))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let with =
            crate::synthesis::SyntheticRecords { ddim: &ddim, model: self.model()?, extra: records, fits_cards: cards };
        let decoded = input.with_data(images);
        let (written, physical) =
            crate::synthesis::write_synthetic(&paths, &decoded.data, "run: decode", &decoded, with)?;
        counts.insert("maps".into(), json!(decoded.data.len_of(Axis(0))));
        counts.insert("physical_units".into(), json!(physical));
        counts.insert(
            "unet_evaluations".into(),
            json!(reused.evaluations_done(self.plan.unet_evaluations(&format!("decode/{d}")), input.dim.0)),
        );
        counts.insert("batches_from_checkpoints".into(), json!(reused.batches));
        Ok((written, counts))
    }
}
