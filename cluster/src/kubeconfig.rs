//! Kubeconfig files: one per client certificate, all pointing at the API
//! server on the cluster bridge.

use std::fs;
use std::path::Path;

use crate::config::{API_PORT, HOST_IP, Layout};

/// The API server's URL, the same from the host and from every node.
pub fn server_url() -> String {
    format!("https://{HOST_IP}:{API_PORT}")
}

/// Writes `<who>.kubeconfig` for the certificate `pki/<who>.crt`.
pub fn write(layout: &Layout, who: &str) -> std::io::Result<()> {
    let pki = layout.pki();
    let text = render(
        &pki.join("ca.crt"),
        &pki.join(format!("{who}.crt")),
        &pki.join(format!("{who}.key")),
        who,
    );
    fs::write(layout.kubeconfig(who), text)
}

fn render(ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    let server = server_url();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: local
  context:
    cluster: local
    user: {user}
current-context: local
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_is_one_that_kube_rs_reads() {
        let text = render(
            Path::new("/s/ca.crt"),
            Path::new("/s/admin.crt"),
            Path::new("/s/admin.key"),
            "admin",
        );
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("local"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.210.0.1:6443"));
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_key.as_deref(), Some("/s/admin.key"));
    }
}
