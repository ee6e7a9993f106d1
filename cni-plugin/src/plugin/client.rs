//! The plugin's end of [`crate::protocol`]: one event out, one reply back,
//! over the agent's unix stream socket, within a deadline.
//!
//! The plugin runs synchronously inside the container runtime's pod
//! set-up, so a hung agent must not hold it: the whole exchange, connect
//! included (std's `UnixStream::connect` has no timeout and blocks while the
//! listener's backlog is full), runs on a worker thread that we stop waiting
//! for at the deadline. The process exits soon after, taking the thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::protocol::{AgentReply, PluginEvent};

/// How long the plugin waits for the agent, connect to reply.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply longer than this is not an [`AgentReply`].
const MAX_REPLY_BYTES: u64 = 64 * 1024;

/// Why the agent could not be asked. Every variant means "unreachable":
/// the plugin then decides enrollment itself.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the exchange failed: {0}")]
    Exchange(std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("it closed the connection without replying")]
    NoReply,
    #[error("its reply {reply:?} is not an agent reply: {error}")]
    BadReply {
        reply: String,
        error: serde_json::Error,
    },
    #[error("cannot start the thread that talks to it: {0}")]
    Spawn(std::io::Error),
}

/// Talks to the agent at one socket.
#[derive(Clone, Debug)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `event` and waits for the reply, at most the timeout.
    pub fn send(&self, event: &PluginEvent) -> Result<AgentReply, AgentError> {
        let mut line = serde_json::to_string(event)
            .expect("a PluginEvent of UTF-8 strings, paths and addresses always serializes");
        line.push('\n');
        let (tx, rx) = mpsc::channel();
        let socket = self.socket.clone();
        let timeout = self.timeout;
        thread::Builder::new()
            .name("agent-exchange".into())
            .spawn(move || {
                // The receiver is gone only if we stopped waiting.
                let _ = tx.send(exchange(&socket, &line, timeout));
            })
            .map_err(AgentError::Spawn)?;
        match rx.recv_timeout(self.timeout) {
            Ok(reply) => reply,
            // A disconnect without a send means the worker panicked; treat it
            // as any other failure to hear back.
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                Err(AgentError::Timeout(self.timeout))
            }
        }
    }
}

fn exchange(socket: &Path, line: &str, timeout: Duration) -> Result<AgentReply, AgentError> {
    let mut stream = UnixStream::connect(socket).map_err(AgentError::Connect)?;
    // So that the worker does not outlive the deadline by much either.
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(AgentError::Exchange)?;
    stream
        .write_all(line.as_bytes())
        .and_then(|()| stream.shutdown(Shutdown::Write))
        .map_err(AgentError::Exchange)?;
    let mut reply = String::new();
    BufReader::new(stream.take(MAX_REPLY_BYTES))
        .read_line(&mut reply)
        .map_err(AgentError::Exchange)?;
    if reply.is_empty() {
        return Err(AgentError::NoReply);
    }
    serde_json::from_str(reply.trim_end()).map_err(|error| AgentError::BadReply {
        reply: reply.trim_end().to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::protocol::Command;

    fn event() -> PluginEvent {
        PluginEvent {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/var/run/netns/p1".into(),
            pod_name: "web".into(),
            pod_namespace: "apps".into(),
            pod_uid: None,
            ips: vec![],
        }
    }

    /// An agent that reads one event and answers with `reply` verbatim.
    fn agent(reply: &'static str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            s.write_all(reply.as_bytes()).unwrap();
        });
        (dir, path)
    }

    #[test]
    fn reads_the_reply() {
        let (_dir, path) = agent("\"notEnrolled\"\n");
        let reply = AgentClient::new(path, DEFAULT_AGENT_TIMEOUT).send(&event());
        assert_eq!(reply.unwrap(), AgentReply::NotEnrolled);
    }

    #[test]
    fn garbage_and_silence_are_errors() {
        let (_dir, path) = agent("hello\n");
        let err = AgentClient::new(path, DEFAULT_AGENT_TIMEOUT).send(&event());
        assert!(matches!(err, Err(AgentError::BadReply { .. })), "{err:?}");
        let (_dir, path) = agent("");
        let err = AgentClient::new(path, DEFAULT_AGENT_TIMEOUT).send(&event());
        assert!(matches!(err, Err(AgentError::NoReply)), "{err:?}");
    }

    #[test]
    fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // Accepts (the backlog does) but never answers.
        let _listener = UnixListener::bind(&path).unwrap();
        let err = AgentClient::new(path, Duration::from_millis(200)).send(&event());
        assert!(matches!(err, Err(AgentError::Timeout(_))), "{err:?}");
    }

    #[test]
    fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            AgentClient::new(dir.path().join("none.sock"), DEFAULT_AGENT_TIMEOUT).send(&event());
        assert!(matches!(err, Err(AgentError::Connect(_))), "{err:?}");
    }
}
