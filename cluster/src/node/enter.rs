//! How a container's process starts: the node runs `cluster enter` with
//! the container's environment; it joins the pod's network namespace, takes
//! a mount namespace of its own in which the pod's volumes are bound at
//! their `mountPath`s (nothing of it reaches the machine's mounts), changes
//! to the working directory and becomes the container's program.

use std::convert::Infallible;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::mounts::Bind;
use crate::config::EnterArgs;

/// The arguments of `cluster enter` for a container.
pub fn args(netns: &Path, binds: &[Bind], workdir: &str, argv: &[String]) -> Vec<String> {
    let mut args = vec![
        "enter".to_string(),
        format!("--net={}", netns.display()),
        format!("--workdir={workdir}"),
    ];
    for b in binds {
        let flag = if b.read_only { "--ro-bind" } else { "--bind" };
        args.push(format!(
            "{flag}={}={}",
            b.target.display(),
            b.source.display()
        ));
    }
    args.push("--".into());
    args.extend(argv.iter().cloned());
    args
}

/// Parses `TARGET=SOURCE` (a mountPath holds no `=` in practice; the first
/// one splits).
pub fn parse_bind(s: &str) -> Result<(PathBuf, PathBuf), String> {
    let (target, source) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected TARGET=SOURCE"))?;
    Ok((target.into(), source.into()))
}

/// Never returns but with an error: on success the process is the program.
pub fn run(args: EnterArgs) -> anyhow::Result<Infallible> {
    let Some((program, rest)) = args.argv.split_first() else {
        bail!("no program to run");
    };
    let netns = std::fs::File::open(&args.net)
        .with_context(|| format!("opening network namespace {}", args.net.display()))?;
    setns(&netns, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("joining network namespace {}", args.net.display()))?;
    unshare(CloneFlags::CLONE_NEWNS).context("making a mount namespace")?;
    // Mounts made here stay here; the machine's still show.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    let mut binds: Vec<_> = args
        .bind
        .iter()
        .map(|b| (b, false))
        .chain(args.ro_bind.iter().map(|b| (b, true)))
        .collect();
    // A mount inside another volume's goes after it.
    binds.sort_by_key(|((target, _), _)| target.components().count());
    for ((target, source), read_only) in binds {
        bind(source, target, read_only)
            .with_context(|| format!("binding {} at {}", source.display(), target.display()))?;
    }
    std::env::set_current_dir(&args.workdir)
        .with_context(|| format!("working directory {}", args.workdir.display()))?;
    let e = std::process::Command::new(program).args(rest).exec();
    Err(e).with_context(|| format!("running {program}"))
}

fn bind(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<()> {
    if !target.exists() {
        bail!("the mount point does not exist (the node makes it)");
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_travel_as_target_equals_source() {
        let binds = [
            Bind {
                source: "/state/v/token".into(),
                target: "/var/run/secrets/tokens".into(),
                read_only: true,
            },
            Bind {
                source: "/state/v/scratch".into(),
                target: "/tmp/x".into(),
                read_only: false,
            },
        ];
        let a = args(
            Path::new("/var/run/netns/p"),
            &binds,
            "/",
            &["/bin/sh".into(), "-c".into(), "true".into()],
        );
        assert_eq!(
            a,
            [
                "enter",
                "--net=/var/run/netns/p",
                "--workdir=/",
                "--ro-bind=/var/run/secrets/tokens=/state/v/token",
                "--bind=/tmp/x=/state/v/scratch",
                "--",
                "/bin/sh",
                "-c",
                "true"
            ]
        );
        assert_eq!(
            parse_bind("/var/run/secrets/tokens=/state/v/token").unwrap(),
            (
                PathBuf::from("/var/run/secrets/tokens"),
                PathBuf::from("/state/v/token")
            )
        );
        assert!(parse_bind("nothing").is_err());
    }
}
