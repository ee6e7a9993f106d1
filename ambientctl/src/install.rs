//! `ambientctl install [--set KEY=VALUE] [--dry-run]`: the manifests of
//! `deploy/` (built in), rendered with a profile and image settings, then
//! server-side applied to the cluster of the kubeconfig, reporting each
//! component as istioctl does: `✔ Istiod installed` once its workloads are
//! ready, `✘ Istiod encountered an error: ...` naming those that are not
//! after `--readiness-timeout`.

use std::fmt::Write as _;

use std::time::Duration;

use mesh_kube::deploy::{self, Profile, Values};
use mesh_kube::readiness;

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
    #[error("{component} encountered an error: {error}")]
    NotReady {
        component: &'static str,
        error: mesh_kube::readiness::NotReady,
    },
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
    readiness_timeout: Duration,
) -> Result<String, InstallError> {
    let objects = deploy::render(values)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InstallError::Runtime)?;
    rt.block_on(async {
        let client =
            mesh_kube::source::connect(kubeconfig, mesh_kube::source::CONNECT_TIMEOUT).await?;
        let mut components = Vec::new();
        deploy::apply(&client, &objects, "ambientctl", |c| components.push(c)).await?;
        for component in components {
            let own: Vec<_> = objects
                .iter()
                .filter(|o| deploy::component(o) == component)
                .cloned()
                .collect();
            if let Err(error) = readiness::wait(&client, &own, readiness_timeout).await {
                println!("✘ {component} encountered an error: {error}");
                return Err(InstallError::NotReady { component, error });
            }
            println!("✔ {component} installed");
        }
        let mut out = String::new();
        let _ = writeln!(out, "✔ Installation complete");
        Ok(out)
    })
}

/// A duration as istioctl takes one: `300s`, `5m`, `5m0s`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 300s, 5m or 1m30s");
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_timeouts_read_as_istioctl_writes_them() {
        assert_eq!(parse_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h1m1s").unwrap(), Duration::from_secs(3661));
        for bad in ["", "5", "5x", "m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

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
