//! The cluster's processes: started detached from the terminal (their own
//! process group, output to a log file), each recorded in a pid file with
//! its program, so that `down` stops exactly them even after `up` itself
//! died, and never a process that has since reused the pid.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::Layout;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "cannot start {name} from {program} (`cargo xtask cluster build` builds the components)"
    )]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Starts `program` as the cluster's `name`; its output goes to `logs/<name>.log`.
pub fn spawn(
    layout: &Layout,
    name: &str,
    program: &Path,
    args: &[String],
) -> Result<u32, ProcessError> {
    spawn_in(layout, name, None, program, args)
}

/// [`spawn`], inside the network namespace `netns` (a name of `ip netns`)
/// when given, entered by `enter` (the `cluster` binary's `cluster enter`,
/// which becomes `program`): the recorded program is `program` itself.
pub fn spawn_in(
    layout: &Layout,
    name: &str,
    netns: Option<(&str, &Path)>,
    program: &Path,
    args: &[String],
) -> Result<u32, ProcessError> {
    use std::os::unix::process::CommandExt;
    let (logs, pids) = (layout.logs(), layout.pids());
    for dir in [&logs, &pids] {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let log_path = logs.join(format!("{name}.log"));
    let log = fs::File::create(&log_path).map_err(io(&log_path))?;
    let err = log.try_clone().map_err(io(&log_path))?;
    let mut command = match netns {
        Some((netns, enter)) => {
            let mut c = Command::new(enter);
            c.arg("enter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    let child = command.spawn().map_err(|source| ProcessError::Spawn {
        name: name.to_string(),
        program: program.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    let pid_path = pids.join(format!("{name}.pid"));
    fs::write(&pid_path, format!("{pid}\n{}\n", program.display())).map_err(io(&pid_path))?;
    Ok(pid)
}

/// A recorded process.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub name: String,
    pub pid: u32,
    pub program: PathBuf,
}

impl Recorded {
    /// Still running the program it was started with.
    pub fn alive(&self) -> bool {
        fs::read_link(format!("/proc/{}/exe", self.pid))
            .is_ok_and(|exe| same_program(&exe, &self.program))
    }
}

/// The kernel shows a replaced binary as "path (deleted)".
fn same_program(exe: &Path, program: &Path) -> bool {
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    let program = fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    Path::new(exe) == program
}

/// Every process the state directory records, in name order.
pub fn recorded(layout: &Layout) -> Vec<Recorded> {
    let Ok(entries) = fs::read_dir(layout.pids()) else {
        return Vec::new();
    };
    let mut all: Vec<Recorded> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.path().file_stem()?.to_string_lossy().into_owned();
            let text = fs::read_to_string(entry.path()).ok()?;
            let mut lines = text.lines();
            let pid = lines.next()?.trim().parse().ok()?;
            let program = PathBuf::from(lines.next()?);
            Some(Recorded { name, pid, program })
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Stops the recorded processes: SIGTERM, then SIGKILL for any still
/// running after `grace`. Returns the names of those it stopped.
pub fn stop(processes: &[Recorded], grace: Duration) -> Vec<String> {
    let alive: Vec<&Recorded> = processes.iter().filter(|p| p.alive()).collect();
    for p in &alive {
        let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && alive.iter().any(|p| p.alive()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in alive.iter().filter(|p| p.alive()) {
        let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
    }
    alive.iter().map(|p| p.name.clone()).collect()
}
