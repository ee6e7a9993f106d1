//! curl from inside a network namespace, keeping all it says: the HTTP
//! status and body, or, when there was no HTTP answer, curl's exit code and
//! error text, so a failed assertion says what happened on the wire.

use std::fmt;
use std::time::{Duration, Instant};

use super::Pod;
use super::host::ns_output;

/// What one curl got.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status; 0 when there was no HTTP answer.
    pub status: u16,
    pub body: String,
    /// curl's exit code (0: it got an answer, whatever the status).
    pub exit: i32,
    /// What curl wrote to stderr (`curl: (56) Recv failure: ...`).
    pub error: String,
}

impl Reply {
    /// Whether this is the answer `status` with exactly `body`.
    pub fn is(&self, status: u16, body: &str) -> bool {
        self.status == status && self.body == body
    }

    /// Panics, showing the whole reply, unless its status is `status`.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected HTTP {status}, got {self}");
        self
    }

    /// Panics, showing the whole reply, unless it is `status` with `body`.
    #[track_caller]
    pub fn assert_is(&self, status: u16, body: &str) -> &Self {
        assert!(
            self.is(status, body),
            "expected HTTP {status} {body:?}, got {self}"
        );
        self
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status == 0 {
            write!(f, "no HTTP answer")?;
        } else {
            write!(f, "HTTP {} {:?}", self.status, self.body)?;
        }
        if self.exit != 0 || !self.error.is_empty() {
            write!(f, " (curl exit {}: {})", self.exit, self.error.trim())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// curl from `from` with `args` (a 5 s `--max-time` unless `args` has a
/// later one).
pub fn curl_status(from: &Pod, args: &[&str]) -> Reply {
    curl_status_in(&from.netns, args)
}

/// [`curl_status`] in network namespace `netns`.
pub fn curl_status_in(netns: &str, args: &[&str]) -> Reply {
    let mut argv = vec!["-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    argv.extend_from_slice(args);
    let out = ns_output(netns, "curl", &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        exit: out.status.code().unwrap_or(-1),
        error: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Sends requests with `send` until a reply satisfies `ok` (the mesh
/// converging), up to 30 s, and returns that reply; on timeout the panic
/// shows the last reply.
#[track_caller]
pub fn until_reply(
    what: &str,
    mut send: impl FnMut() -> Reply,
    ok: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = send();
        if ok(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "timed out (30 s) waiting until {what}; the last reply: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
