//! A pod's volumes, made as the kubelet makes them and bound into each
//! container at its `volumeMounts`.
//!
//! Each volume but a hostPath is a directory of the node's
//! `var/lib/kubelet/pods/<uid>/volumes/<name>`: an emptyDir empty, a
//! ConfigMap's or Secret's keys as files (or its `items`), a projected
//! volume's sources side by side, its service-account tokens from the
//! TokenRequest API (audience, expiry, bound to the pod) and rotated as the
//! kubelet rotates them (at 80% of their lifetime). Files are replaced by
//! rename, so a container sees each one whole. A hostPath is a path of the
//! node: under the node's own root, except kernel-backed paths that all
//! nodes of one machine share (`/sys`, `/proc`, `/dev`, `/var/run/netns`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::mounts::Bind;
use super::objects::{Kind, data};

/// Paths every node of this machine shares: one kernel backs them.
const SHARED_HOST_PATHS: &[&str] = &[
    "/sys",
    "/proc",
    "/dev",
    "/var/run/netns",
    "/run/netns",
    "/lib/modules",
];
/// A token's default lifetime when the projection gives none (the API's).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// A projected token the node keeps fresh.
struct Token {
    file: PathBuf,
    projection: ServiceAccountTokenProjection,
    refresh_at: Instant,
}

/// The pod's volumes, made.
pub struct Volumes {
    pod: Pod,
    /// Volume name → what is bound for it, and whether it is API data
    /// (ConfigMap, Secret, projected), which is always bound read-only.
    sources: BTreeMap<String, (PathBuf, bool)>,
    tokens: Vec<Token>,
    /// Rotate tokens at least this often (the node's `--token-refresh`).
    refresh_cap: Option<Duration>,
    /// The pod's `resolv.conf`, bound at `/etc/resolv.conf` in every
    /// container; `None` keeps the node's.
    resolv: Option<PathBuf>,
}

/// Where a node keeps its pods' volumes and what its hostPaths mean.
pub struct Paths<'a> {
    /// The node's root: `<state>/nodes/<node>`.
    pub node_root: &'a Path,
    /// Where mount points made on the machine are recorded.
    pub mount_points: &'a Path,
}

impl Paths<'_> {
    /// The pod's directory: removed with the pod.
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.node_root
            .join("var/lib/kubelet/pods")
            .join(pod.metadata.uid.as_deref().unwrap_or("no-uid"))
    }

    /// What a hostPath `path` is on this machine.
    pub fn host_path(&self, path: &str) -> Result<PathBuf, String> {
        let p = Path::new(path);
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(format!("hostPath {path:?} must be absolute, without `..`"));
        }
        if SHARED_HOST_PATHS.iter().any(|shared| p.starts_with(shared)) {
            return Ok(p.to_path_buf());
        }
        Ok(self.node_root.join(p.strip_prefix("/").unwrap_or(p)))
    }
}

impl Volumes {
    /// Makes every volume of the pod; an error names the volume and what is
    /// missing (the pod then waits, as the kubelet's does, and retries).
    pub async fn make(
        client: &Client,
        paths: &Paths<'_>,
        pod: &Pod,
        refresh_cap: Option<Duration>,
    ) -> Result<Self, String> {
        let mut volumes = Self {
            pod: pod.clone(),
            sources: BTreeMap::new(),
            tokens: Vec::new(),
            refresh_cap,
            resolv: None,
        };
        let dir = paths.pod_dir(pod).join("volumes");
        let specs = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in &specs {
            let source = volumes
                .make_one(client, paths, &dir, v)
                .await
                .map_err(|e| format!("volume {:?}: {e}", v.name))?;
            let api_data = v.config_map.is_some() || v.secret.is_some() || v.projected.is_some();
            volumes.sources.insert(v.name.clone(), (source, api_data));
        }
        if let Some(content) = super::dns::resolv_conf(pod) {
            let dir = paths.pod_dir(pod);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join("resolv.conf");
            replace(&path, content.as_bytes())?;
            volumes.resolv = Some(path);
        }
        Ok(volumes)
    }

    async fn make_one(
        &mut self,
        client: &Client,
        paths: &Paths<'_>,
        dir: &Path,
        v: &Volume,
    ) -> Result<PathBuf, String> {
        if let Some(host) = &v.host_path {
            return host_path(paths, &host.path, host.type_.as_deref().unwrap_or(""));
        }
        let target = dir.join(&v.name);
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        if v.empty_dir.is_some() {
            return Ok(target);
        }
        let ns = self.namespace();
        for source in sources(v)? {
            match source {
                Source::Keys {
                    kind,
                    name,
                    optional,
                    items,
                } => {
                    let files = data(client, &ns, kind, &name, optional.unwrap_or(false)).await?;
                    write_items(&target, files, items.as_deref())?;
                }
                Source::Downward(items) => {
                    for item in items {
                        let value = self.downward(&item)?;
                        write_file(&target, &item.path, value.as_bytes())?;
                    }
                }
                Source::Token(projection) => {
                    let mut t = Token {
                        file: within(&target, &projection.path)?,
                        projection,
                        refresh_at: Instant::now(),
                    };
                    self.issue(client, &mut t).await?;
                    self.tokens.push(t);
                }
            }
        }
        Ok(target)
    }

    /// Rotates the tokens that are due; a failure is logged and retried at
    /// the next call, the old token staying in place meanwhile.
    pub async fn refresh_tokens(&mut self, client: &Client) {
        let mut tokens = std::mem::take(&mut self.tokens);
        for t in &mut tokens {
            if Instant::now() >= t.refresh_at
                && let Err(e) = self.issue(client, t).await
            {
                tracing::warn!(file = %t.file.display(), error = %e, "service-account token not rotated");
            }
        }
        self.tokens = tokens;
    }

    /// Requests the token and writes it; schedules the next rotation.
    async fn issue(&self, client: &Client, t: &mut Token) -> Result<(), String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let seconds = t
            .projection
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_SECONDS);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: t.projection.audience.clone().map(|a| vec![a]),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: self.pod.metadata.name.clone(),
                    uid: self.pod.metadata.uid.clone(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace());
        let issued = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("token for service account {account:?}: {e}"))?;
        let token = issued.status.and_then(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(format!(
                "the API answered the token request for {account:?} without a token"
            ));
        }
        replace(&t.file, token.as_bytes())?;
        // The kubelet rotates at 80% of the lifetime (or after 24 h).
        let lifetime = Duration::from_secs(seconds.max(0) as u64);
        let mut after = (lifetime * 4 / 5).min(Duration::from_secs(24 * 3600));
        if let Some(cap) = self.refresh_cap {
            after = after.min(cap);
        }
        t.refresh_at = Instant::now() + after;
        Ok(())
    }

    /// A container's binds, from its `volumeMounts`.
    pub fn binds(&self, c: &Container) -> Result<Vec<Bind>, String> {
        let mut binds: Vec<Bind> = self
            .resolv
            .iter()
            .map(|source| Bind {
                source: source.clone(),
                target: "/etc/resolv.conf".into(),
                read_only: true,
            })
            .collect();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let (source, api_data) = self.sources.get(&m.name).ok_or_else(|| {
                format!(
                    "volumeMount {:?} of container {:?} names no volume of the pod",
                    m.name, c.name
                )
            })?;
            let source = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => within(source, sub)?,
                _ => source.clone(),
            };
            let target = PathBuf::from(&m.mount_path);
            if !target.is_absolute() {
                return Err(format!(
                    "mountPath {:?} of container {:?} is not absolute",
                    m.mount_path, c.name
                ));
            }
            binds.push(Bind {
                source,
                target,
                read_only: *api_data || m.read_only.unwrap_or(false),
            });
        }
        Ok(binds)
    }

    fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }

    fn downward(&self, item: &DownwardAPIVolumeFile) -> Result<String, String> {
        let m = &self.pod.metadata;
        let field = item.field_ref.as_ref().map(|f| f.field_path.as_str());
        let labels = |map: &Option<BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                .collect::<String>()
        };
        match field {
            Some("metadata.name") => Ok(m.name.clone().unwrap_or_default()),
            Some("metadata.namespace") => Ok(m.namespace.clone().unwrap_or_default()),
            Some("metadata.uid") => Ok(m.uid.clone().unwrap_or_default()),
            Some("metadata.labels") => Ok(labels(&m.labels)),
            Some("metadata.annotations") => Ok(labels(&m.annotations)),
            other => Err(format!(
                "downwardAPI item {:?}: source {other:?} is not made by the node simulator (it makes metadata.name, namespace, uid, labels, annotations)",
                item.path
            )),
        }
    }
}

fn host_path(paths: &Paths<'_>, path: &str, kind: &str) -> Result<PathBuf, String> {
    let p = paths.host_path(path)?;
    let exists = p.exists();
    match kind {
        "" | "DirectoryOrCreate" if !exists => {
            std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        "FileOrCreate" if !exists => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&p, b"").map_err(|e| format!("{}: {e}", p.display()))?;
        }
        "Directory" if !p.is_dir() => {
            return Err(format!(
                "hostPath {path:?} ({}) is not a directory",
                p.display()
            ));
        }
        "File" | "Socket" | "CharDevice" | "BlockDevice" if !exists => {
            return Err(format!(
                "hostPath {path:?} ({}) does not exist",
                p.display()
            ));
        }
        "" | "DirectoryOrCreate" | "FileOrCreate" | "Directory" | "File" | "Socket"
        | "CharDevice" | "BlockDevice" => {}
        other => return Err(format!("hostPath type {other:?} is not a Kubernetes one")),
    }
    if p != Path::new(path) {
        super::filesystem::expose(&p, Path::new(path), paths.mount_points)?;
    }
    Ok(p)
}

/// What a volume's directory is made of: a ConfigMap or Secret volume is
/// a projected volume with one source.
enum Source {
    Keys {
        kind: Kind,
        name: String,
        optional: Option<bool>,
        items: Option<Vec<KeyToPath>>,
    },
    Downward(Vec<DownwardAPIVolumeFile>),
    Token(ServiceAccountTokenProjection),
}

fn sources(v: &Volume) -> Result<Vec<Source>, String> {
    if let Some(cm) = &v.config_map {
        return Ok(vec![Source::Keys {
            kind: Kind::ConfigMap,
            name: cm.name.clone(),
            optional: cm.optional,
            items: cm.items.clone(),
        }]);
    }
    if let Some(secret) = &v.secret {
        return Ok(vec![Source::Keys {
            kind: Kind::Secret,
            name: secret.secret_name.clone().unwrap_or_default(),
            optional: secret.optional,
            items: secret.items.clone(),
        }]);
    }
    let Some(projected) = &v.projected else {
        return Err("a volume type the node simulator does not make (it makes emptyDir, configMap, secret, projected, hostPath)".into());
    };
    projected
        .sources
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            if let Some(cm) = p.config_map {
                Ok(Source::Keys {
                    kind: Kind::ConfigMap,
                    name: cm.name,
                    optional: cm.optional,
                    items: cm.items,
                })
            } else if let Some(secret) = p.secret {
                Ok(Source::Keys {
                    kind: Kind::Secret,
                    name: secret.name,
                    optional: secret.optional,
                    items: secret.items,
                })
            } else if let Some(downward) = p.downward_api {
                Ok(Source::Downward(downward.items.unwrap_or_default()))
            } else if let Some(token) = p.service_account_token {
                Ok(Source::Token(token))
            } else {
                Err("a projected source of a kind the node simulator does not make (it makes configMap, secret, downwardAPI, serviceAccountToken)".into())
            }
        })
        .collect()
}

/// Writes every key as a file, or only `items` (key → path), each named
/// key required to exist.
fn write_items(
    dir: &Path,
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<(), String> {
    match items {
        None => {
            for (key, value) in &files {
                write_file(dir, key, value)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = files
                    .get(&item.key)
                    .ok_or_else(|| format!("key {:?} not found", item.key))?;
                write_file(dir, &item.path, value)?;
            }
        }
    }
    Ok(())
}

fn write_file(dir: &Path, relative: &str, value: &[u8]) -> Result<(), String> {
    let path = within(dir, relative)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    replace(&path, value)
}

/// `relative` under `dir`, refused if it would leave it.
fn within(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let p = Path::new(relative);
    if relative.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "path {relative:?} must be relative and stay inside the volume"
        ));
    }
    Ok(dir.join(p))
}

/// Writes `value` to a new file beside `path`, then renames it over: a
/// reader sees the old content or the new, never half.
fn replace(path: &Path, value: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, value).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_the_nodes_own_except_kernel_backed_ones() {
        let root = Path::new("/state/nodes/node-1");
        let paths = Paths {
            node_root: root,
            mount_points: Path::new("/state/mount-points"),
        };
        assert_eq!(
            paths.host_path("/opt/cni/bin").unwrap(),
            root.join("opt/cni/bin")
        );
        assert_eq!(
            paths.host_path("/var/run/netns").unwrap(),
            Path::new("/var/run/netns")
        );
        assert_eq!(
            paths.host_path("/sys/fs/bpf").unwrap(),
            Path::new("/sys/fs/bpf")
        );
        assert!(paths.host_path("relative").is_err());
        assert!(paths.host_path("/opt/../etc").is_err());
    }

    #[test]
    fn item_paths_stay_inside_the_volume() {
        let dir = Path::new("/v");
        assert_eq!(within(dir, "a/b").unwrap(), Path::new("/v/a/b"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(within(dir, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn items_pick_keys_and_a_missing_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/renamed".into(),
            ..KeyToPath::default()
        }];
        write_items(dir.path(), files.clone(), Some(&items)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/renamed")).unwrap(), b"2");
        assert!(!dir.path().join("a").exists());
        let missing = [KeyToPath {
            key: "c".into(),
            path: "c".into(),
            ..KeyToPath::default()
        }];
        let e = write_items(dir.path(), files, Some(&missing)).unwrap_err();
        assert!(e.contains("key \"c\" not found"), "{e}");
    }
}
