//! `ambientctl precheck`: can this machine run a mesh node (the local mesh,
//! or a node of a cluster)? Like `istioctl x precheck`, only problems are
//! printed, errors (`✘`) before warnings (`⚠️`), then one success line when
//! there is no error.
//!
//! What is looked at comes in through [`Host`], so tests check the rules
//! against made-up machines.

use std::fmt::Write as _;
use std::path::PathBuf;

/// What precheck reads from the machine.
#[derive(Clone, Debug)]
pub struct Host {
    pub euid: u32,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// Where commands are looked for (PATH).
    pub path: Vec<PathBuf>,
    /// Where CNI plugins are looked for.
    pub cni_dirs: Vec<PathBuf>,
    /// The cgroup v2 mount, if one was found.
    pub cgroup2: Option<PathBuf>,
}

impl Host {
    pub fn this_machine() -> Host {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let cgroup2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists());
        Host {
            euid: nix::unistd::geteuid().as_raw(),
            kernel,
            path,
            cni_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cgroup2,
        }
    }

    fn has_command(&self, name: &str) -> bool {
        self.path.iter().any(|d| d.join(name).is_file())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub level: Level,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub issues: Vec<Issue>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.issues.iter().any(|i| i.level == Level::Error)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for level in [Level::Error, Level::Warning] {
            for i in self.issues.iter().filter(|i| i.level == level) {
                let mark = if level == Level::Error {
                    "✘"
                } else {
                    "⚠️"
                };
                let _ = writeln!(out, "{mark} {}", i.message);
            }
        }
        if self.ok() {
            out.push_str(
                "✔ No issues found when checking the node. The mesh is safe to run here!\n",
            );
        }
        out
    }

    fn error(&mut self, message: String) {
        self.issues.push(Issue {
            level: Level::Error,
            message,
        });
    }

    fn warning(&mut self, message: String) {
        self.issues.push(Issue {
            level: Level::Warning,
            message,
        });
    }
}

/// The oldest kernel the in-pod redirection is tested on (nftables sets,
/// `bpf_sk_assign` on tc ingress, cgroup connect4 programs).
const MIN_KERNEL: (u32, u32) = (5, 10);
const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn run(host: &Host) -> Report {
    let mut r = Report::default();
    if host.euid != 0 {
        r.error(
            "not running as root: the node agent and ztunnel enter network namespaces and \
             install nftables rules and BPF programs (run as root)"
                .into(),
        );
    }
    match kernel_version(&host.kernel) {
        Some(v) if v >= MIN_KERNEL => {}
        Some((major, minor)) => r.error(format!(
            "kernel {major}.{minor} is older than {}.{}, the oldest the in-pod redirection \
             supports",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        None => r.warning(format!(
            "cannot tell the kernel version from {:?}; {}.{} or later is needed",
            host.kernel, MIN_KERNEL.0, MIN_KERNEL.1
        )),
    }
    for (command, package, why) in [
        (
            "ip",
            "iproute2",
            "creates network namespaces and veth pairs",
        ),
        ("nft", "nftables", "installs the in-pod redirection rules"),
        ("curl", "curl", "is the demo's client"),
    ] {
        if !host.has_command(command) {
            r.error(format!(
                "{command} not found on PATH ({command} {why}): apt-get install {package}"
            ));
        }
    }
    if !host.has_command("tc") {
        r.warning(
            "tc not found on PATH: eBPF redirection (--redirection ebpf) needs it \
             (apt-get install iproute2)"
                .into(),
        );
    }
    let missing: Vec<&str> = CNI_PLUGINS
        .iter()
        .filter(|p| !host.cni_dirs.iter().any(|d| d.join(p).is_file()))
        .copied()
        .collect();
    if !missing.is_empty() {
        r.error(format!(
            "CNI plugins {} not found in {}: apt-get install containernetworking-plugins",
            missing.join(", "),
            host.cni_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if host.cgroup2.is_none() {
        r.warning(
            "no cgroup v2 mount found (/sys/fs/cgroup/unified or /sys/fs/cgroup): eBPF \
             redirection attaches its connect4 program there"
                .into(),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn machine(dir: &Path) -> Host {
        for name in [
            "ip",
            "nft",
            "curl",
            "tc",
            "bridge",
            "host-local",
            "loopback",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        std::fs::create_dir_all(dir.join("cgroup")).unwrap();
        Host {
            euid: 0,
            kernel: "6.1.0-18-amd64".into(),
            path: vec![dir.to_path_buf()],
            cni_dirs: vec![dir.to_path_buf()],
            cgroup2: Some(dir.join("cgroup")),
        }
    }

    #[test]
    fn a_ready_machine_passes_with_the_success_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&machine(dir.path()));
        assert!(report.ok());
        assert_eq!(
            report.render(),
            "✔ No issues found when checking the node. The mesh is safe to run here!\n"
        );
    }

    #[test]
    fn each_missing_piece_is_named_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = machine(dir.path());
        host.euid = 1000;
        host.kernel = "4.19.0".into();
        host.cgroup2 = None;
        std::fs::remove_file(dir.path().join("nft")).unwrap();
        std::fs::remove_file(dir.path().join("host-local")).unwrap();
        std::fs::remove_file(dir.path().join("tc")).unwrap();
        let report = run(&host);
        assert!(!report.ok());
        let out = report.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(lines[0].starts_with("✘ not running as root"), "{out}");
        assert!(
            lines[1].starts_with("✘ kernel 4.19 is older than 5.10"),
            "{out}"
        );
        assert!(lines[2].contains("apt-get install nftables"), "{out}");
        assert!(
            lines[3].starts_with("✘ CNI plugins host-local not found"),
            "{out}"
        );
        assert!(lines[4].starts_with("⚠️ tc not found"), "{out}");
        assert!(lines[5].starts_with("⚠️ no cgroup v2 mount"), "{out}");
        assert!(!out.contains("No issues"), "{out}");
    }

    #[test]
    fn kernel_releases_parse_with_or_without_a_suffix() {
        assert_eq!(kernel_version("6.18.0"), Some((6, 18)));
        assert_eq!(kernel_version("5.10-rc1"), Some((5, 10)));
        assert_eq!(kernel_version("weird"), None);
    }
}
