//! A directory of Kubernetes-style YAML or JSON manifests (`--config-dir`),
//! re-read when files change: the embedded default that needs no cluster.
//!
//! **Invariant:** a broken manifest never takes away what was working. A file
//! that is not valid YAML keeps every object it last defined; an object that
//! fails to parse or validate keeps its last good version; the errors name
//! the file, the object and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_runtime::drain::DrainWatcher;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{Model, Object, ObjectError, ObjectKey, Parsed, parse_object};

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based document number within the file, when known.
    pub document: Option<usize>,
    pub error: ObjectError,
    /// The objects whose previous version stays in force because of it.
    pub kept: Vec<ObjectKey>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(n) = self.document {
            write!(f, " (document {n})")?;
        }
        write!(f, ": {}", self.error)?;
        if !self.kept.is_empty() {
            let kept: Vec<String> = self.kept.iter().map(ToString::to_string).collect();
            write!(f, "; keeping the last good version of {}", kept.join(", "))?;
        }
        Ok(())
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// The set of objects (or any object) changed.
    pub changed: bool,
    /// Problems in files that changed since the previous scan.
    pub errors: Vec<ManifestError>,
    /// Files re-read (changed, new) or gone: their old problems are void.
    pub touched: Vec<PathBuf>,
}

struct FileEntry {
    digest: u64,
    keys: BTreeSet<ObjectKey>,
}

/// The directory and the objects last read from it.
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    objects: BTreeMap<ObjectKey, (Object, PathBuf)>,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The objects as a model snapshot.
    pub fn model(&self) -> Model {
        Model::from_objects(self.objects.iter().map(|(k, (o, _))| (k, o)))
    }

    /// Re-reads every file that changed since the last scan. Fails only when
    /// the directory itself cannot be read (then nothing changes).
    pub fn scan(&mut self) -> std::io::Result<ScanReport> {
        let mut paths = Vec::new();
        list_manifests(&self.root, &mut paths)?;
        let mut report = ScanReport::default();

        let present: BTreeSet<PathBuf> = paths.iter().cloned().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            report.touched.push(path.clone());
            if let Some(entry) = self.files.remove(&path) {
                for key in entry.keys {
                    if self.objects.get(&key).is_some_and(|(_, f)| *f == path) {
                        self.objects.remove(&key);
                        report.changed = true;
                    }
                }
            }
        }

        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    // Being rewritten, or unreadable: keep what we had.
                    warn!(file = %path.display(), error = %e, "cannot read manifest; keeping what it defined before");
                    continue;
                }
            };
            let mut h = DefaultHasher::new();
            text.hash(&mut h);
            let digest = h.finish();
            if self.files.get(&path).is_some_and(|e| e.digest == digest) {
                continue;
            }
            report.touched.push(path.clone());
            self.read_file(&path, &text, digest, &mut report);
        }
        Ok(report)
    }

    fn read_file(&mut self, path: &Path, text: &str, digest: u64, report: &mut ScanReport) {
        let previous: BTreeSet<ObjectKey> = self
            .files
            .get(path)
            .map(|e| e.keys.clone())
            .unwrap_or_default();
        let docs = match parse_manifest(text) {
            Ok(docs) => docs,
            Err(e) => {
                let location = e
                    .location()
                    .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                    .unwrap_or_default();
                report.errors.push(ManifestError {
                    file: path.to_path_buf(),
                    document: None,
                    error: ObjectError {
                        object: None,
                        field: None,
                        problem: format!("not valid YAML{location}: {e}"),
                    },
                    kept: previous.iter().cloned().collect(),
                });
                self.files.insert(
                    path.to_path_buf(),
                    FileEntry {
                        digest,
                        keys: previous,
                    },
                );
                return;
            }
        };

        let mut keys = BTreeSet::new();
        // An error before a document names its object could be hiding any
        // object the file had: then nothing the file had is dropped.
        let mut unidentified = false;
        for Document { number, parsed } in docs {
            match parsed {
                Ok(Parsed::Object(key, object)) => {
                    let fresh = (*object, path.to_path_buf());
                    if let Some((_, other)) = self.objects.get(&key)
                        && other != path
                        && self.files.contains_key(other)
                    {
                        warn!(object = %key, file = %path.display(), also_in = %other.display(),
                            "object defined in two files; the one read last wins");
                    }
                    if self.objects.get(&key) != Some(&fresh) {
                        self.objects.insert(key.clone(), fresh);
                        report.changed = true;
                    }
                    keys.insert(key);
                }
                Ok(Parsed::Ignored { api_version, kind }) => {
                    debug!(file = %path.display(), %api_version, %kind, "ignoring a kind the mesh does not read");
                }
                Err(error) => {
                    let mut kept = Vec::new();
                    match &error.object {
                        Some(key) if previous.contains(key) => {
                            keys.insert(key.clone());
                            kept.push(key.clone());
                        }
                        Some(_) => {}
                        None => unidentified = true,
                    }
                    report.errors.push(ManifestError {
                        file: path.to_path_buf(),
                        document: Some(number),
                        error,
                        kept,
                    });
                }
            }
        }
        if unidentified {
            keys.extend(previous.iter().cloned());
        }
        for key in previous.difference(&keys) {
            if self.objects.get(key).is_some_and(|(_, f)| f == path) {
                self.objects.remove(key);
                report.changed = true;
            }
        }
        self.files
            .insert(path.to_path_buf(), FileEntry { digest, keys });
    }
}

/// One document of a manifest file, typed and validated on its own.
#[derive(Debug)]
pub struct Document {
    /// 1-based position in the file (empty documents are counted).
    pub number: usize,
    pub parsed: Result<Parsed, ObjectError>,
}

/// One file's text (multi-document YAML, or JSON) → its non-empty
/// documents. Fails as a whole only when the text is not YAML, including
/// when it nests deeper than the YAML reader's limit (128 levels); a
/// document that is YAML but not a valid object is an `Err` of its own.
pub fn parse_manifest(text: &str) -> Result<Vec<Document>, serde_yaml::Error> {
    Ok(split_documents(text)?
        .into_iter()
        .map(|(i, doc)| Document {
            number: i + 1,
            parsed: parse_object(doc),
        })
        .collect())
}

/// Splits a multi-document YAML text into (document index, document);
/// empty documents are dropped but still counted.
fn split_documents(text: &str) -> Result<Vec<(usize, serde_yaml::Value)>, serde_yaml::Error> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_yaml::Value::deserialize(de)?;
        if !v.is_null() {
            docs.push((i, v));
        }
    }
    Ok(docs)
}

/// `*.yaml`, `*.yml` and `*.json` under `dir`, recursively, skipping hidden
/// entries (editor swap files, ConfigMap `..data` links), sorted.
fn list_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            list_manifests(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// The latest problems, for status and the CLI.
pub type ErrorLog = Arc<Mutex<Vec<ManifestError>>>;

/// Re-scans every `interval`, publishing a new model when anything changed
/// and logging each new problem once.
pub async fn watch_dir(
    mut dir: ManifestDir,
    interval: Duration,
    models: watch::Sender<Arc<Model>>,
    errors: ErrorLog,
    drain: DrainWatcher,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = drain.signaled() => return,
        }
        match dir.scan() {
            Ok(report) => {
                publish(&dir, report, &models, &errors);
            }
            Err(e) => {
                warn!(dir = %dir.root().display(), error = %e, "cannot read the manifest directory; keeping the current configuration")
            }
        }
    }
}

/// Logs a scan's problems and sends the model if it changed.
pub fn publish(
    dir: &ManifestDir,
    report: ScanReport,
    models: &watch::Sender<Arc<Model>>,
    errors: &ErrorLog,
) {
    for e in &report.errors {
        warn!("invalid manifest: {e}");
    }
    if !report.touched.is_empty() {
        let mut log = errors.lock().unwrap_or_else(|e| e.into_inner());
        log.retain(|old| !report.touched.contains(&old.file));
        log.extend(report.errors);
    }
    if report.changed {
        info!(dir = %dir.root().display(), "manifests changed");
        models.send_replace(Arc::new(dir.model()));
    }
}

#[cfg(test)]
mod tests;
