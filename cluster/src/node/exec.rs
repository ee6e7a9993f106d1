//! `kubectl exec`: `/exec/{namespace}/{pod}/{container}?command=...`,
//! upgraded to a WebSocket. The command runs as the container's own
//! process was started (`running.rs`): `cluster enter` with the pod's
//! network namespace, the container's mounts, working directory and
//! environment. Standard input, output and error travel on channels 0, 1
//! and 2; when the command ends, channel 3 carries a `Status`, with the
//! exit code when it is not 0, as the kubelet sends it, so kubectl exits
//! with the command's code.

use std::path::Path;
use std::process::Stdio;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::running::Launch;
use super::websocket::{self, CLOSE, ERROR, Protocol, STDERR, STDIN, STDOUT, Socket};

/// What the API server asks for, from the query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Request {
    pub fn parse(query: &str) -> Self {
        let mut out = Request::default();
        let yes = |v: &str| v == "1" || v == "true";
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "command" => out.command.push(v.into_owned()),
                "input" | "stdin" => out.stdin = yes(&v),
                "output" | "stdout" => out.stdout = yes(&v),
                "error" | "stderr" => out.stderr = yes(&v),
                "tty" => out.tty = yes(&v),
                _ => {}
            }
        }
        out
    }
}

/// Runs `request` in the container `launch` describes, over `socket`.
pub async fn run(
    socket: Socket,
    protocol: Protocol,
    program: &Path,
    launch: Launch,
    request: Request,
) {
    let (sink, mut incoming) = socket.split();
    let (tx, writer) = websocket::sender(sink);
    if let Some(status) = execute(&mut incoming, &tx, protocol, program, launch, request).await {
        let _ = tx
            .send(websocket::on_channel(ERROR, status.to_string().as_bytes()))
            .await;
    }
    drop(tx);
    let _ = writer.await;
}

/// Runs the command, relaying its streams; its final `Status`, or `None`
/// when the client went first.
async fn execute(
    incoming: &mut futures::stream::SplitStream<Socket>,
    tx: &mpsc::Sender<Message>,
    protocol: Protocol,
    program: &Path,
    launch: Launch,
    request: Request,
) -> Option<Value> {
    if request.tty {
        return Some(failure(
            "a terminal (tty) is not offered by the node simulator; run the command without -t",
            None,
        ));
    }
    if request.command.is_empty() {
        return Some(failure("no command to run", None));
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let spawned = Command::new(program)
        .args(&launch.enter)
        .args(&request.command)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(pipe(request.stdin))
        .stdout(pipe(request.stdout))
        .stderr(pipe(request.stderr))
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Some(failure(&format!("starting the command: {e}"), None)),
    };
    let out = child.stdout.take().map(|o| relay(o, STDOUT, tx.clone()));
    let err = child.stderr.take().map(|e| relay(e, STDERR, tx.clone()));
    let mut stdin = child.stdin.take();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) => to_stdin(&mut stdin, protocol, &data).await,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // The client went: so does the command.
                    let _ = child.kill().await;
                    return None;
                }
                Some(Ok(_)) => {}
            },
        }
    }?;
    for relay in [out, err].into_iter().flatten() {
        let _ = relay.await;
    }
    Some(match status.code() {
        Some(0) => json!({ "metadata": {}, "status": "Success" }),
        Some(code) => failure(
            &format!("command terminated with non-zero exit code: exit status {code}"),
            Some(code),
        ),
        None => failure("command terminated by a signal", Some(137)),
    })
}

/// Data for standard input, or (v5) its end.
async fn to_stdin(stdin: &mut Option<ChildStdin>, protocol: Protocol, data: &[u8]) {
    match data {
        [STDIN, rest @ ..] => {
            if let Some(pipe) = stdin
                && pipe.write_all(rest).await.is_err()
            {
                *stdin = None;
            }
        }
        [CLOSE, STDIN] if protocol == Protocol::V5 => *stdin = None,
        // Resize (no terminal here) and anything else.
        _ => {}
    }
}

fn relay(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    channel: u8,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send(websocket::on_channel(channel, &buf[..n]))
                    .await
                    .is_err()
            {
                return;
            }
        }
    })
}

/// A failed `Status`, shaped as the kubelet's so that clients read the
/// exit code from it.
fn failure(message: &str, exit_code: Option<i32>) -> Value {
    let mut status = json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
    });
    if let Some(code) = exit_code {
        status["reason"] = json!("NonZeroExitCode");
        status["details"] =
            json!({ "causes": [{ "reason": "ExitCode", "message": code.to_string() }] });
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_query_reads_as_sent() {
        let r = Request::parse(
            "command=curl&command=-s&command=http%3A%2F%2Fweb.demo%2F&error=1&output=1",
        );
        assert_eq!(r.command, ["curl", "-s", "http://web.demo/"]);
        assert!(r.stdout && r.stderr && !r.stdin && !r.tty);
    }

    #[test]
    fn a_non_zero_exit_is_reported_with_its_code() {
        let s = failure(
            "command terminated with non-zero exit code: exit status 7",
            Some(7),
        );
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "7");
    }
}
