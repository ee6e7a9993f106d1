//! `ambientctl install [--set KEY=VALUE] [--dry-run]`: the manifests of
//! `deploy/` (built in), rendered with a profile and image settings, then
//! server-side applied to the cluster of the kubeconfig, reporting each
//! component as istioctl does (`✔ Istiod installed`).

use std::fmt::Write as _;

use mesh_kube::deploy::{self, Profile, Values};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--set {0:?}: expected KEY=VALUE with KEY one of profile, hub, tag")]
    Set(String),
    #[error(transparent)]
    Render(#[from] deploy::RenderError),
    #[error(transparent)]
    Connect(#[from] mesh_kube::source::SourceError),
    #[error(transparent)]
    Apply(#[from] deploy::ApplyError),
    #[error("starting the client runtime: {0}")]
    Runtime(std::io::Error),
}

/// `--set` values over the defaults.
pub fn values(set: &[String]) -> Result<Values, InstallError> {
    let mut v = Values::default();
    for s in set {
        match s.split_once('=') {
            Some(("profile", p)) => v.profile = Profile::parse(p)?,
            Some(("hub", h)) if !h.is_empty() => v.hub = h.trim_end_matches('/').to_string(),
            Some(("tag", t)) if !t.is_empty() => v.tag = t.to_string(),
            _ => return Err(InstallError::Set(s.clone())),
        }
    }
    Ok(v)
}

/// The manifests `install` would apply.
pub fn dry_run(values: &Values) -> Result<String, InstallError> {
    Ok(deploy::to_yaml(&deploy::render(values)?))
}

/// Applies the manifests to the cluster of `kubeconfig` (or `KUBECONFIG`,
/// or in-cluster), printing progress to stdout.
pub fn install(
    values: &Values,
    kubeconfig: Option<&std::path::Path>,
) -> Result<String, InstallError> {
    let objects = deploy::render(values)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InstallError::Runtime)?;
    rt.block_on(async {
        let client =
            mesh_kube::source::connect(kubeconfig, mesh_kube::source::CONNECT_TIMEOUT).await?;
        deploy::apply(&client, &objects, "ambientctl", |component| {
            println!("✔ {component} installed");
        })
        .await?;
        let mut out = String::new();
        let _ = writeln!(out, "✔ Installation complete");
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_takes_istioctl_style_values_and_refuses_others() {
        let v = values(&[
            "profile=ambient-ebpf".into(),
            "hub=r.example/mesh/".into(),
            "tag=dev".into(),
        ])
        .unwrap();
        assert_eq!(v.profile, Profile::AmbientEbpf);
        assert_eq!((v.hub.as_str(), v.tag.as_str()), ("r.example/mesh", "dev"));
        assert!(
            values(&["colour=blue".into()])
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert!(
            values(&["profile=minimal".into()])
                .unwrap_err()
                .to_string()
                .contains("ambient-ebpf")
        );
        let yaml = dry_run(&v).unwrap();
        assert!(yaml.contains("image: r.example/mesh/ztunnel:dev"), "{yaml}");
        assert!(yaml.contains("value: ebpf"));
    }
}
