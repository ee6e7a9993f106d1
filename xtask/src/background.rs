//! A CI step run beside the others: a child process in its own process
//! group, its output in a log file shown when it is waited for, and
//! stopped (with its children) if CI fails before that.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

pub struct Background {
    what: String,
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
}

impl Background {
    /// Starts `cmd` with its output in `log`.
    pub fn start(what: &str, log: &Path, mut cmd: Command) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group, so that what it starts goes with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what} in the background"))?;
        eprintln!("==> {what}, in the background (log: {})", log.display());
        Ok(Self {
            what: what.to_string(),
            child,
            log: log.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// Waits for it; its log is shown either way.
    pub fn wait(mut self) -> anyhow::Result<()> {
        eprintln!("==> waiting for {}", self.what);
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprint!("{text}");
        eprintln!(
            "xtask: {} ended after {:.0?} ({status})",
            self.what,
            self.started.elapsed()
        );
        if !status.success() {
            bail!("{} failed ({status}); its output is above", self.what);
        }
        Ok(())
    }
}

impl Drop for Background {
    /// A CI step failed first: this goes too.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}
