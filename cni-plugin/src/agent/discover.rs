//! Finding a pod's network namespace when no CNI event told us where it is
//! (the agent restarted, or the pod started while the agent was down): every
//! namespace file under the runtime's netns directory is entered and its
//! addresses compared with the pod's IPs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use mesh_netns::Netns;

/// The namespaces under `dir`, by each address configured inside them.
/// Unreadable entries are skipped (they may vanish while we look).
pub fn namespaces_by_ip(dir: &Path) -> HashMap<IpAddr, std::path::PathBuf> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(netns) = Netns::open(&path) else {
            continue;
        };
        let Ok(Ok(addrs)) = netns.run(nix::ifaddrs::getifaddrs) else {
            continue;
        };
        for a in addrs {
            let ip = a.address.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                found.insert(ip, path.clone());
            }
        }
    }
    found
}
