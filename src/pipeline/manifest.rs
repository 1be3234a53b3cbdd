//! The run manifest (`manifest.json`): tool version, input and model hashes, seeds, and for each
//! finished stage its time, counts and output hashes. Resume trusts a stage only when the
//! manifest says it finished and its outputs still hash the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl FileHash {
    /// Hashes `path` (recorded as `shown`, e.g. relative to the run folder).
    pub fn of(path: &Path, shown: &Path) -> Result<FileHash> {
        let (bytes, sha256) = crate::io::sha256_file(path)?;
        Ok(FileHash { path: shown.to_path_buf(), bytes, sha256 })
    }
}

/// SHA-256 of a string, hex.
pub fn sha256_text(text: &str) -> String {
    sha256_bytes(text.as_bytes())
}

/// SHA-256 of bytes, hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes (a digest) in lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one finished stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub seconds: f64,
    /// Counts worth keeping (maps, UNet evaluations, candidates tried, accepted, ...).
    pub counts: BTreeMap<String, serde_json::Value>,
    /// Outputs, relative to the run folder.
    pub outputs: Vec<FileHash>,
    /// UTC time the stage finished.
    pub finished: String,
}

/// The manifest of a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    /// SHA-256 of the resolved `config.toml`.
    pub config_sha256: String,
    pub inputs: Vec<FileHash>,
    /// The model folder and the hashes of its config, scheduler config and weights.
    pub model_folder: PathBuf,
    pub model: Vec<FileHash>,
    /// The run seed and the stream each stage derives from it.
    pub seeds: BTreeMap<String, u64>,
    /// Worker threads of the CPU backend.
    pub threads: usize,
    pub started: String,
    /// Finished stages, by name (`ingest/<domain>`, `invert/<domain>`, `fit`, ...).
    pub stages: BTreeMap<String, StageRecord>,
    /// Whether every stage has finished.
    pub complete: bool,
    /// Peak resident memory of the process that last worked on the run, MiB (Linux).
    pub peak_memory_mib: Option<f64>,
    /// The shards that computed a sharded stage (`invert`, `decode`), when it ran as a job array.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shards: BTreeMap<String, Vec<ShardRecord>>,
    /// Every earlier config of the run folder, oldest first, with what changed and what was redone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_history: Vec<ConfigChange>,
}

/// One change of config (or of input files or model) of a run folder, kept in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// UTC time of the resume that found the change.
    pub changed: String,
    /// The config the folder held before, as written to its `config.toml`, and its SHA-256.
    pub previous_config: String,
    pub previous_config_sha256: String,
    /// What changed: config keys, `inputs of <domain>`, `model files`.
    pub changes: Vec<String>,
    /// Stages redone because of it (those recorded as finished are discarded).
    pub redone: Vec<String>,
}

/// What one shard of a sharded stage computed (`shards/<stage>_<I>_of_<N>.json` until the stage
/// is assembled, then in the manifest): its batch checkpoints with their hashes, and the Slurm job
/// that ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// `invert` or `decode`.
    pub stage: String,
    pub index: usize,
    pub count: usize,
    /// Batch checkpoints written (or kept from an earlier attempt), relative to the run folder.
    pub batches: Vec<FileHash>,
    /// `SLURM_*` variables of the job (job id, array job id and task id, node, restart count).
    pub job: BTreeMap<String, String>,
    pub host: String,
    pub threads: usize,
    pub seconds: f64,
    pub finished: String,
}

impl Manifest {
    /// Reads `manifest.json`.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(e)))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not an expanse run manifest: {e}")).with_source(e))
    }

    /// Writes the manifest atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_text(path, &serde_json::to_string_pretty(self).expect("manifest serializes")).map(|_| ())
    }
}

/// The stream seed of stage `name` derived from the run seed (SplitMix64 of the seed mixed with
/// the FNV-1a hash of the name), so that stages do not share random numbers.
pub fn derive_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = (seed ^ h).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    String::from_utf8_lossy(&crate::runtime::utc_stamp(secs)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(sha256_text("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "abc").unwrap();
        let h = FileHash::of(&p, Path::new("f")).unwrap();
        assert_eq!(
            (h.bytes, h.sha256.as_str()),
            (3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn stage_seeds_differ_by_name_and_seed_and_are_stable() {
        assert_ne!(derive_seed(0, "sample/a"), derive_seed(0, "sample/b"));
        assert_ne!(derive_seed(0, "sample/a"), derive_seed(1, "sample/a"));
        // Pinned: changing the derivation would change every run's samples.
        assert_eq!(derive_seed(0, "sample/clouds"), 4252548864402441877);
    }

    #[test]
    fn utc_dates_are_civil() {
        let t = utc_now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
