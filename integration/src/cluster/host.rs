//! Running things on this machine: commands (failing loudly with their
//! output), commands inside a network namespace, and child processes that
//! are killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs a command and returns its stdout; panics with the command, status
/// and stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = output(program, args, None);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, feeding `stdin`, and returns everything it produced.
pub fn output(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        // A command that exits early (a refused connection) closes its
        // stdin; its status says what happened.
        let _ = pipe.write_all(input);
    }
    child.wait_with_output().expect("wait for command")
}

/// The arguments that run `program args` inside the named namespace.
pub fn in_netns<'a>(netns: &'a str, program: &'a str, args: &[&'a str]) -> Vec<String> {
    let mut v = vec![
        format!("--net=/var/run/netns/{netns}"),
        "--".to_string(),
        program.to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Runs `f` on a new thread inside the named network namespace (the
/// sockets it makes stay there), as an application in a pod would.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let netns = netns.to_string();
    let ns = mesh_netns::Netns::open(format!("/var/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("network namespace {netns}: {e}"));
    std::thread::spawn(move || {
        ns.run(f)
            .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
    })
}

/// Runs a command inside a namespace; returns its output whatever its status.
pub fn ns_output(netns: &str, program: &str, args: &[&str]) -> Output {
    let argv = in_netns(netns, program, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    output("nsenter", &argv, None)
}

/// Runs a command inside a namespace; panics if it fails.
pub fn ns_sh(netns: &str, program: &str, args: &[&str]) -> String {
    let argv = in_netns(netns, program, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    sh("nsenter", &argv)
}

/// A child process that is killed when dropped; its output goes to a log
/// file, which is printed when a test fails while it runs.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program` inside `netns` with `env`, logging to `log`.
    pub fn spawn(
        name: &str,
        netns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{netns}"))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM (a graceful drain), then SIGKILL after 5 s.
    /// How the process ended, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // A cluster's processes' logs are kept whole in its folder.
            if std::thread::panicking() && !super::logs::kept_by_a_cluster() {
                eprintln!(
                    "----- {} log ({}) -----\n{}",
                    self.name,
                    self.log.display(),
                    self.logs()
                );
            }
        }
    }
}

/// Fails loudly unless we can create network namespaces.
pub fn require_root() {
    let uid = output("id", &["-u"], None);
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "the network-namespace cluster needs root (network namespaces, nftables, CNI plugins); run `sudo cargo xtask e2e`"
    );
    for tool in ["ip", "nft", "nsenter", "curl", "socat", "tcpdump"] {
        let found = output("sh", &["-c", &format!("command -v {tool}")], None);
        assert!(
            found.status.success(),
            "`{tool}` is missing; install it: apt-get install iproute2 nftables util-linux curl socat tcpdump"
        );
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(super::CNI_PLUGIN_DIR).join(plugin);
        assert!(
            path.exists(),
            "the CNI reference plugin {} is missing; install it: apt-get install containernetworking-plugins",
            path.display()
        );
    }
}
