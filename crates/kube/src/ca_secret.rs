//! The self-signed mesh root, kept in the Secret `istio-ca-secret` of
//! istiod-lite's namespace (as istiod keeps its own), so that a new
//! istiod-lite pod signs with the root every proxy already trusts.
//!
//! At start: if the Secret exists, its files (Istio's plug-in layout:
//! `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`) are
//! written into the CA directory; otherwise a root is generated there and
//! stored as the Secret. Two istiod-lite pods starting at once both try to
//! create it; the loser reads the winner's and uses that.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

pub const CA_SECRET: &str = "istio-ca-secret";
/// Istio's type for the self-signed root's Secret.
pub const SECRET_TYPE: &str = "istio.io/ca-root";
pub const FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("reading Secret {namespace}/{CA_SECRET}: {error}")]
    Read { namespace: String, error: String },
    #[error("storing the new root as Secret {namespace}/{CA_SECRET}: {error}")]
    Create { namespace: String, error: String },
    #[error(
        "Secret {namespace}/{CA_SECRET} has no {file}; delete it to have a new root made, or fix it"
    )]
    Incomplete {
        namespace: String,
        file: &'static str,
    },
    #[error("{path}: {error}")]
    File { path: String, error: String },
    #[error("generating a root: {0}")]
    Generate(String),
}

/// What the CA directory should hold, from the Secret or newly made.
pub async fn sync_ca_dir(
    client: &Client,
    namespace: &str,
    dir: &Path,
    generate: impl FnOnce() -> Result<(), String>,
) -> Result<(), CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |error: kube::Error| CaSecretError::Read {
        namespace: namespace.into(),
        error: error.to_string(),
    };
    if let Some(secret) = api.get_opt(CA_SECRET).await.map_err(read)? {
        tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "using the mesh root kept in the cluster");
        return write_files(&secret, namespace, dir);
    }
    generate().map_err(CaSecretError::Generate)?;
    let mut data = std::collections::BTreeMap::new();
    for file in FILES {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| CaSecretError::File {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        data.insert(file.to_string(), ByteString(bytes));
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "stored the new mesh root in the cluster");
            Ok(())
        }
        // Another istiod-lite was first: its root is the mesh's.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let theirs = api.get(CA_SECRET).await.map_err(read)?;
            write_files(&theirs, namespace, dir)
        }
        Err(e) => Err(CaSecretError::Create {
            namespace: namespace.into(),
            error: e.to_string(),
        }),
    }
}

/// The Secret's files into `dir`, each readable by its owner only.
fn write_files(secret: &Secret, namespace: &str, dir: &Path) -> Result<(), CaSecretError> {
    let file_error = |path: &Path, e: std::io::Error| CaSecretError::File {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let data = secret.data.clone().unwrap_or_default();
    for file in FILES {
        let bytes = data.get(file).ok_or(CaSecretError::Incomplete {
            namespace: namespace.into(),
            file,
        })?;
        let path = dir.join(file);
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| file_error(&path, e))?;
        f.write_all(&bytes.0).map_err(|e| file_error(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
