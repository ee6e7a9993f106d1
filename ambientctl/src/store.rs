//! Where the commands read and write objects ([`Objects`]): the local
//! mesh's "API server", a directory of Kubernetes YAML that istiod-lite
//! (and the demo's waypoint controller) read ([`ManifestStore`]), or a
//! Kubernetes cluster (`cluster.rs`).
//!
//! Objects are found wherever they are, also inside multi-document files
//! a user wrote. A change rewrites only the file that holds the object
//! (atomically: a temporary file, then a rename, so readers never see half
//! a file); a new object gets a file of its own, `<kind>-<ns>-<name>.yaml`.
//! Rewriting a file keeps its other documents but not its comments.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// Objects by kind, namespace and name, wherever they are kept.
pub trait Objects {
    /// Every object of `kind` (`Namespace`, `Gateway`, ...).
    fn list(&self, kind: &str) -> Result<Vec<Doc>, StoreError>;
    /// The object `kind` `namespace/name` (namespace ignored for
    /// cluster-scoped kinds: pass "").
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Doc>, StoreError>;
    /// Creates `object`, or replaces the one of its kind and name.
    fn apply(&self, object: Value) -> Result<(), StoreError>;
    /// Removes the object; `false` when there was none.
    fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<bool, StoreError>;
}

/// One object, and where it lives.
#[derive(Clone, Debug)]
pub struct Doc {
    /// Its file; on a cluster, its API path.
    pub file: PathBuf,
    /// Its position among the file's documents.
    pub index: usize,
    pub object: Value,
}

impl Doc {
    pub fn name(&self) -> &str {
        str_at(&self.object, &["metadata", "name"]).unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        str_at(&self.object, &["metadata", "namespace"]).unwrap_or("default")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        str_at(&self.object, &["metadata", "labels", key])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a directory (give the local mesh's manifest directory with --manifests)")]
    NotADirectory(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {source} (fix or remove it; nothing was changed)")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {error}")]
    Cluster { what: String, error: String },
}

/// A manifest directory.
#[derive(Clone, Debug)]
pub struct ManifestStore {
    dir: PathBuf,
}

impl ManifestStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::NotADirectory(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rewrite(&self, file: &Path, edit: impl FnOnce(&mut Vec<Value>)) -> Result<(), StoreError> {
        let mut docs = read_docs(file)?;
        edit(&mut docs);
        write_atomic(file, &to_yaml(&docs, file)?)
    }

    fn all(&self) -> Result<Vec<Doc>, StoreError> {
        let read = |source| StoreError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(read)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| n.starts_with('.'));
                let yaml = matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                );
                !hidden && yaml && p.is_file()
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for file in files {
            for (index, object) in read_docs(&file)?.into_iter().enumerate() {
                out.push(Doc {
                    file: file.clone(),
                    index,
                    object,
                });
            }
        }
        Ok(out)
    }
}

impl Objects for ManifestStore {
    /// Every object of `kind` (`Namespace`, `Gateway`, ...), in file order.
    fn list(&self, kind: &str) -> Result<Vec<Doc>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|d| str_at(&d.object, &["kind"]) == Some(kind))
            .collect())
    }

    /// The object `kind` `namespace/name` (namespace ignored for
    /// cluster-scoped kinds: pass "").
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Doc>, StoreError> {
        Ok(self
            .list(kind)?
            .into_iter()
            .find(|d| d.name() == name && (kind == "Namespace" || d.namespace() == namespace)))
    }

    /// Writes `object` where it already is, or in a new file.
    fn apply(&self, object: Value) -> Result<(), StoreError> {
        let kind = str_at(&object, &["kind"]).unwrap_or("Object").to_string();
        let name = str_at(&object, &["metadata", "name"])
            .unwrap_or("")
            .to_string();
        let ns = str_at(&object, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_string();
        match self.get(&kind, &ns, &name)? {
            Some(doc) => self.rewrite(&doc.file, |docs| docs[doc.index] = object),
            None => {
                let file = if kind == "Namespace" {
                    format!("namespace-{name}.yaml")
                } else {
                    format!("{}-{ns}-{name}.yaml", kind.to_lowercase())
                };
                let text = to_yaml(&[object], &self.dir.join(&file))?;
                write_atomic(&self.dir.join(file), &text)
            }
        }
    }

    /// Removes the object; `false` when there was none.
    fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let Some(doc) = self.get(kind, namespace, name)? else {
            return Ok(false);
        };
        let docs = read_docs(&doc.file)?;
        if docs.len() == 1 {
            std::fs::remove_file(&doc.file).map_err(|source| StoreError::Write {
                path: doc.file.clone(),
                source,
            })?;
        } else {
            self.rewrite(&doc.file, |docs| {
                docs.remove(doc.index);
            })?;
        }
        Ok(true)
    }
}

/// A field's string value along `path`.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(*key))?.as_str()
}

fn read_docs(file: &Path) -> Result<Vec<Value>, StoreError> {
    let text = std::fs::read_to_string(file).map_err(|source| StoreError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(de).map_err(|source| StoreError::Yaml {
            path: file.to_path_buf(),
            source,
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn to_yaml(docs: &[Value], file: &Path) -> Result<String, StoreError> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(
            &serde_yaml::to_string(d).map_err(|source| StoreError::Yaml {
                path: file.to_path_buf(),
                source,
            })?,
        );
    }
    Ok(out)
}

/// Writes `text` to a temporary file beside `file`, then renames it over
/// `file`: readers see the old contents or the new, never half.
pub(crate) fn write_atomic(file: &Path, text: &str) -> Result<(), StoreError> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let tmp = file.with_file_name(format!(".{name}.tmp"));
    let write = |source| StoreError::Write {
        path: file.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(write)?;
    std::fs::rename(&tmp, file).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_edits_and_deletes_objects_inside_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n",
        )
        .unwrap();
        let store = ManifestStore::open(dir.path()).unwrap();
        let mut ns = store.get("Namespace", "", "shop").unwrap().unwrap();
        ns.object["metadata"]["labels"] = serde_yaml::from_str("{a: b}").unwrap();
        store.apply(ns.object).unwrap();
        let text = std::fs::read_to_string(dir.path().join("app.yaml")).unwrap();
        assert!(
            text.contains("a: b") && text.contains("kind: Service"),
            "{text}"
        );
        assert_eq!(
            store
                .get("Namespace", "", "shop")
                .unwrap()
                .unwrap()
                .label("a"),
            Some("b")
        );

        assert!(store.delete("Namespace", "", "shop").unwrap());
        assert!(!store.delete("Namespace", "", "shop").unwrap());
        assert_eq!(store.list("Service").unwrap().len(), 1);
        assert!(store.delete("Service", "shop", "web").unwrap());
        assert!(
            !dir.path().join("app.yaml").exists(),
            "the last document takes its file"
        );
    }

    #[test]
    fn a_new_object_gets_its_own_file_and_broken_yaml_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::open(dir.path()).unwrap();
        store
            .apply(
                serde_yaml::from_str("kind: Gateway\nmetadata: {name: waypoint, namespace: shop}")
                    .unwrap(),
            )
            .unwrap();
        assert!(dir.path().join("gateway-shop-waypoint.yaml").is_file());
        std::fs::write(dir.path().join("bad.yaml"), "a: [").unwrap();
        let e = store.list("Gateway").unwrap_err().to_string();
        assert!(
            e.contains("bad.yaml") && e.contains("not valid YAML"),
            "{e}"
        );
        assert!(ManifestStore::open(&dir.path().join("nope")).is_err());
    }
}
