//! Network namespaces: open one by path or file descriptor, tell two apart,
//! and run a closure inside one.
//!
//! A socket belongs to the namespace of the thread that created it, and a
//! child process to the namespace of the thread that spawned it. So the
//! node agent runs `nft` inside a pod's namespace, and ztunnel creates its
//! in-pod listeners and upstream sockets there, by moving the current thread
//! in for the duration of a closure ([`Netns::run`]) and back out again.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// What identifies a namespace: the device and inode of its nsfs file. Two
/// handles to the same namespace have the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}] (dev {})", self.ino, self.dev)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a network namespace")]
    NotNetns(String),
    #[error(
        "entering network namespace {id}: {source} (needs CAP_SYS_ADMIN; run as root or with that capability)"
    )]
    Enter {
        id: NetnsId,
        #[source]
        source: nix::Error,
    },
    #[error("returning to the original network namespace: {0}; this thread is now unusable")]
    Return(#[source] nix::Error),
}

/// An open handle to a network namespace. The namespace lives at least as
/// long as the handle, even if its pod is deleted.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    id: NetnsId,
    described: String,
}

impl Netns {
    /// Opens the namespace file at `path` (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_fd(file.into(), path.display().to_string())
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Wraps a descriptor received from elsewhere (ZDS passes one per pod).
    /// `described` names it in errors and logs.
    pub fn from_fd(fd: OwnedFd, described: impl Into<String>) -> Result<Self, NetnsError> {
        let described = described.into();
        let meta = File::from(fd.try_clone().map_err(|source| NetnsError::Open {
            path: PathBuf::from(&described),
            source,
        })?)
        .metadata()
        .map_err(|source| NetnsError::Open {
            path: PathBuf::from(&described),
            source,
        })?;
        // nsfs files are neither regular files nor directories; a network
        // namespace is confirmed when setns accepts it, this catches the
        // obvious mistakes early.
        if meta.is_dir() || meta.len() != 0 {
            return Err(NetnsError::NotNetns(described));
        }
        Ok(Self {
            fd,
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            described,
        })
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The path or description it was opened from.
    pub fn described(&self) -> &str {
        &self.described
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            id: self.id,
            described: self.described.clone(),
        })
    }

    /// Runs `f` on the calling thread with the thread inside this namespace,
    /// then moves the thread back, also when `f` panics.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let home = Self::current()?;
        if home.id == self.id {
            return Ok(f());
        }
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            id: self.id,
            source,
        })?;
        let back = ReturnHome(Some(home));
        let out = f();
        back.finish()?;
        Ok(out)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Moves the thread back to its namespace; on drop too, so a panic in the
/// closure cannot leave a runtime worker thread inside a pod.
struct ReturnHome(Option<Netns>);

impl ReturnHome {
    fn finish(mut self) -> Result<(), NetnsError> {
        match self.0.take() {
            Some(home) => setns(&home.fd, CloneFlags::CLONE_NEWNET).map_err(NetnsError::Return),
            None => Ok(()),
        }
    }
}

impl Drop for ReturnHome {
    fn drop(&mut self) {
        if let Some(home) = self.0.take()
            && let Err(e) = setns(&home.fd, CloneFlags::CLONE_NEWNET)
        {
            // Continuing would create sockets in the wrong namespace.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_namespace_same_id() {
        let a = Netns::current().unwrap();
        let b = Netns::open("/proc/self/ns/net").unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.try_clone().unwrap().id(), a.id());
        // Running in the namespace we are in is a plain call.
        assert_eq!(a.run(|| 7).unwrap(), 7);
    }

    #[test]
    fn not_a_namespace() {
        let dir = std::env::temp_dir();
        assert!(matches!(Netns::open(&dir), Err(NetnsError::NotNetns(_))));
        let missing = Netns::open("/nonexistent/netns").unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/netns"),
            "{missing}"
        );
    }
}
