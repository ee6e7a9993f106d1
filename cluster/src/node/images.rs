//! The image table: there is no container runtime, so an image's name is
//! the only link between a pod spec and a program on this machine. A
//! container whose spec gives `command` runs that command; otherwise its
//! image's entrypoint is looked up here by repository (registry and tag
//! ignored). An image not in the table is refused with its name.
//!
//! The mesh's own images run the binaries built beside the `cluster`
//! binary (`{mesh}` below: the same `target/<profile>` directory); the
//! cluster's add-ons run the components `cargo xtask cluster build` made
//! (`{cluster}`: `target/cluster/bin`).

use std::path::Path;

/// Where an entrypoint names the directory of the mesh's binaries.
const MESH: &str = "{mesh}";
/// Where it names the directory of the cluster's components.
const CLUSTER: &str = "{cluster}";

/// Repository → entrypoint.
const TABLE: &[(&str, &[&str])] = &[
    // Istio's curl sample overrides the command (`/bin/sleep infinity`);
    // without one the image runs curl.
    ("curlimages/curl", &["/usr/bin/curl"]),
    ("busybox", &["/bin/sh"]),
    // deploy/base and the waypoints istiod-lite deploys.
    ("ambient-mesh/ztunnel", &["{mesh}/ztunnel"]),
    ("ambient-mesh/istiod-lite", &["{mesh}/istiod-lite"]),
    ("ambient-mesh/cni", &["{mesh}/cni-agent"]),
    ("ambient-mesh/waypoint", &["{mesh}/waypoint"]),
    // The demo's and the tests' application: HTTP answering
    // `hello from <name>, you are <client>` (integration/src/bin/pod-echo.rs).
    ("ambient-mesh/sample", &["{mesh}/pod-echo"]),
    // addons/coredns.yaml
    ("coredns/coredns", &["{cluster}/coredns"]),
    // Istio's httpbin sample: the program of that image, built by
    // `cargo xtask cluster build` from its Go module.
    ("mccutchen/go-httpbin", &["{cluster}/go-httpbin"]),
];

/// The repository of an image reference: `docker.io/library/busybox:1.36`
/// gives `busybox`, `ghcr.io/x/y@sha256:...` gives `x/y`.
pub fn repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let (path, last) = match no_digest.rsplit_once('/') {
        Some((p, l)) => (Some(p), l),
        None => (None, no_digest),
    };
    let last = last.split(':').next().unwrap_or(last);
    let mut parts: Vec<&str> = path.map(|p| p.split('/').collect()).unwrap_or_default();
    if parts
        .first()
        .is_some_and(|first| first.contains('.') || first.contains(':') || *first == "localhost")
    {
        parts.remove(0);
    }
    if parts.first() == Some(&"library") {
        parts.remove(0);
    }
    parts.push(last);
    parts.join("/")
}

/// The image's entrypoint; `mesh` is the directory of the mesh's
/// binaries, `cluster` that of the cluster's components.
pub fn entrypoint(image: &str, mesh: &Path, cluster: &Path) -> Result<Vec<String>, String> {
    let repo = repository(image);
    let (mesh, cluster) = (mesh.display().to_string(), cluster.display().to_string());
    TABLE
        .iter()
        .find(|(r, _)| *r == repo)
        .map(|(_, argv)| {
            argv.iter()
                .map(|s| s.replace(MESH, &mesh).replace(CLUSTER, &cluster))
                .collect()
        })
        .ok_or_else(|| {
            format!("image {image:?} (repository {repo:?}) is not in the node's image table and the container gives no command")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_found_whatever_the_registry_tag_or_digest() {
        assert_eq!(repository("busybox"), "busybox");
        assert_eq!(repository("docker.io/library/busybox:1.36"), "busybox");
        assert_eq!(repository("curlimages/curl:8.1.2"), "curlimages/curl");
        assert_eq!(repository("ghcr.io/x/y@sha256:abcd"), "x/y");
        assert_eq!(repository("localhost:5000/app:1"), "app");
        let mesh = Path::new("/work/target/debug");
        let cluster = Path::new("/work/target/cluster/bin");
        assert!(
            entrypoint("nginx", mesh, cluster)
                .unwrap_err()
                .contains("not in the node's image table")
        );
        assert_eq!(
            entrypoint("docker.io/curlimages/curl", mesh, cluster).unwrap(),
            ["/usr/bin/curl"]
        );
        assert_eq!(
            entrypoint("ambient-mesh/ztunnel:0.1.0", mesh, cluster).unwrap(),
            ["/work/target/debug/ztunnel"]
        );
        assert_eq!(
            entrypoint("registry.local/ambient-mesh/cni:0.1.0", mesh, cluster).unwrap(),
            ["/work/target/debug/cni-agent"]
        );
        assert_eq!(
            entrypoint("registry.k8s.io/coredns/coredns:v1.15.0", mesh, cluster).unwrap(),
            ["/work/target/cluster/bin/coredns"]
        );
    }
}
