//! What each stage of a run depends on: the stages whose outputs it reads and the config keys it
//! reads. `--resume` with a changed config, changed input files or a changed model keeps every
//! stage whose inputs and keys are unchanged and redoes the rest ([`reconcile`]); the manifest
//! records each config a run folder has had ([`super::manifest::ConfigChange`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::config::{differing_keys, DomainSection};
use super::manifest::{derive_seed, utc_now, ConfigChange, FileHash, Manifest};
use super::{stage_names, RunConfig};
use crate::error::Result;

/// The stages whose outputs stage `name` reads, for a run of `domains`.
pub fn prerequisites(name: &str, domains: &[String]) -> Vec<String> {
    let (kind, d) = name.split_once('/').unwrap_or((name, ""));
    match kind {
        "ingest" => vec![],
        "invert" => vec![format!("ingest/{d}")],
        "fit" => domains.iter().map(|d| format!("invert/{d}")).collect(),
        "sample" => vec!["fit".into(), format!("invert/{d}")],
        // Decoding reads the accepted latents and, to refine, the real stack.
        "decode" => vec![format!("sample/{d}"), format!("ingest/{d}")],
        // Validation compares the synthetic maps with the real maps after geometry.
        "validate" => vec![format!("decode/{d}"), format!("ingest/{d}")],
        _ => vec![],
    }
}

/// The stages that read config key `key` (a dotted path as [`differing_keys`] names it, outside
/// the `[[domain]]` tables) directly, for a run of `domains`. Keys this table does not know
/// are taken to change everything.
pub fn stages_reading(key: &str, domains: &[String]) -> Vec<String> {
    let each = |kind: &str| domains.iter().map(|d| format!("{kind}/{d}")).collect::<Vec<_>>();
    let section = key.split('.').next().unwrap_or(key);
    match (section, key) {
        // Worker threads do not change any result.
        (_, "run.threads") => vec![],
        // The run's name and seed go into the synthetic maps' provenance; the seed also makes the
        // sampling streams.
        (_, "run.seed") => each("sample"),
        (_, "run.name") | (_, "run.formats") => each("decode"),
        // The model's channels shape the stacks.
        (_, "model.path") => each("ingest"),
        (_, "inversion.decode_clip") => each("decode"),
        // Batches are the checkpoint unit and the UNet's batch size: kept apart, conservatively.
        ("model", _) | ("inversion", _) => each("invert"),
        ("prior", _) => vec!["fit".into()],
        ("sampling", _) => each("sample"),
        ("refinement", _) => each("decode"),
        ("validation", _) => each("validate"),
        _ => each("ingest"),
    }
}

/// `first` and every stage that depends on one of them, directly or not, in run order.
pub fn with_dependents(first: &BTreeSet<String>, domains: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in stage_names(domains) {
        if first.contains(&name) || prerequisites(&name, domains).iter().any(|p| out.contains(p)) {
            out.push(name);
        }
    }
    out
}

/// What [`reconcile`] found: the changes and the stages to redo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    pub changes: Vec<String>,
    pub redo: Vec<String>,
}

/// The hashes of each domain's input files.
fn input_hashes(config: &RunConfig) -> Result<Vec<(String, Vec<FileHash>)>> {
    config
        .domains
        .iter()
        .map(|d| Ok((d.name.clone(), d.inputs.iter().map(|p| FileHash::of(p, p)).collect::<Result<_>>()?)))
        .collect()
}

/// Compares the run folder's config (`stored`) and recorded inputs and model (`manifest`) with
/// `config` and the files now on disk (`model_files`), and updates `manifest` to describe the run
/// of `config`: the finished stages that depend on anything changed are discarded, the seeds,
/// hashes and config hash are those of `config`, and the change is appended to
/// `manifest.config_history`. Nothing is written.
pub fn reconcile(
    stored: &RunConfig,
    stored_text: &str,
    config: &RunConfig,
    model_files: &[PathBuf],
    manifest: &mut Manifest,
) -> Result<Reconciled> {
    let domains: Vec<String> = config.domains.iter().map(|d| d.name.clone()).collect();
    let mut changes = Vec::new();
    let mut first = BTreeSet::new();
    let mut whole = stored.clone();
    whole.domains.clear();
    let mut now = config.clone();
    now.domains.clear();
    for key in differing_keys(&whole, &now) {
        first.extend(stages_reading(&key, &domains));
        changes.push(key);
    }
    let before: BTreeMap<&str, &DomainSection> = stored.domains.iter().map(|d| (d.name.as_str(), d)).collect();
    for d in &config.domains {
        match before.get(d.name.as_str()) {
            Some(old) if *old == d => {}
            Some(old) => {
                let (mut a, mut b) = (whole.clone(), whole.clone());
                a.domains = vec![(*old).clone()];
                b.domains = vec![d.clone()];
                changes.extend(
                    differing_keys(&a, &b).iter().map(|k| k.replacen("domain[0]", &format!("domain '{}'", d.name), 1)),
                );
                first.insert(format!("ingest/{}", d.name));
            }
            None => {
                changes.push(format!("domain '{}' added", d.name));
                first.insert(format!("ingest/{}", d.name));
            }
        }
    }
    for old in &stored.domains {
        if !domains.contains(&old.name) {
            changes.push(format!("domain '{}' removed", old.name));
            first.insert("fit".into());
        }
    }
    let inputs = input_hashes(config)?;
    for (d, hashes) in &inputs {
        if hashes.iter().any(|h| !manifest.inputs.contains(h)) && !first.contains(&format!("ingest/{d}")) {
            changes.push(format!("inputs of domain '{d}'"));
            first.insert(format!("ingest/{d}"));
        }
    }
    let model: Vec<FileHash> = model_files.iter().map(|p| FileHash::of(p, p)).collect::<Result<_>>()?;
    if model != manifest.model {
        changes.push("model files".into());
        first.extend(domains.iter().map(|d| format!("ingest/{d}")));
    }
    let planned = stage_names(&domains);
    let redo: Vec<String> = with_dependents(&first, &domains);
    let stale: Vec<String> = manifest.stages.keys().filter(|s| !planned.contains(s)).cloned().collect();
    if changes.is_empty() && stale.is_empty() {
        return Ok(Reconciled::default());
    }
    for s in redo.iter().chain(&stale) {
        manifest.stages.remove(s);
    }
    manifest.complete = false;
    manifest.config_sha256 = super::manifest::sha256_text(&config.to_toml());
    manifest.inputs = inputs.into_iter().flat_map(|(_, h)| h).collect();
    manifest.model_folder = config.model.path.clone();
    manifest.model = model;
    manifest.seeds = run_seeds(config);
    manifest.config_history.push(ConfigChange {
        changed: utc_now(),
        previous_config: stored_text.to_string(),
        previous_config_sha256: super::manifest::sha256_text(stored_text),
        changes: changes.clone(),
        redone: redo.clone(),
    });
    Ok(Reconciled { changes, redo })
}

/// The seeds a run of `config` records: the run seed and each domain's sampling stream.
pub fn run_seeds(config: &RunConfig) -> BTreeMap<String, u64> {
    let mut seeds = BTreeMap::new();
    seeds.insert("run".to_string(), config.run.seed);
    for d in &config.domains {
        let name = format!("sample/{}", d.name);
        seeds.insert(name.clone(), derive_seed(config.run.seed, &name));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_key_redoes_the_stages_that_read_it_and_what_follows() {
        let domains = names(&["a", "b"]);
        let redo = |key: &str| with_dependents(&stages_reading(key, &domains).into_iter().collect(), &domains);
        assert_eq!(
            redo("sampling.count"),
            names(&["sample/a", "sample/b", "decode/a", "decode/b", "validate/a", "validate/b"])
        );
        assert_eq!(redo("validation.statistics"), names(&["validate/a", "validate/b"]));
        assert_eq!(redo("refinement.iterations"), names(&["decode/a", "decode/b", "validate/a", "validate/b"]));
        assert_eq!(redo("prior.kind")[0], "fit");
        assert_eq!(redo("inversion.t0").len(), 2 + 1 + 6);
        assert!(redo("run.threads").is_empty());
        // A key nobody listed is taken to change everything.
        assert_eq!(redo("somewhere.new").len(), stage_names(&domains).len());
    }

    #[test]
    fn one_domain_changed_keeps_the_others_inversion() {
        let domains = names(&["a", "b"]);
        let redo = with_dependents(&["ingest/b".to_string()].into_iter().collect(), &domains);
        assert!(!redo.iter().any(|s| s == "ingest/a" || s == "invert/a"), "{redo:?}");
        // The prior is fitted to every domain at once: every later stage follows.
        for s in ["ingest/b", "invert/b", "fit", "sample/a", "decode/a", "validate/a", "validate/b"] {
            assert!(redo.iter().any(|r| r == s), "{s} in {redo:?}");
        }
    }

    #[test]
    fn every_stage_depends_only_on_earlier_ones() {
        let domains = names(&["a", "b"]);
        let order = stage_names(&domains);
        for (i, s) in order.iter().enumerate() {
            for p in prerequisites(s, &domains) {
                assert!(order[..i].contains(&p), "{s} depends on {p}, which runs later");
            }
        }
    }
}
