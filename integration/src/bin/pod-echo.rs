//! `pod-echo`: the application in test pods. It needs no mesh awareness:
//!
//! - `--http PORT`: answers any HTTP/1.1 request with
//!   `hello from <name>, you are <client ip>` (and the request line in
//!   `x-echo-request`) and closes. The query can ask for a status (`?status=503`) or a delay
//!   (`?delay_ms=2000`); `--http-status CODE` makes every answer CODE;
//!   `--http-body-file PATH` makes every answer the file's contents as
//!   JSON (an identity provider's key set, say).
//! - `--grpc PORT`: a gRPC (h2c) server answering any method with one
//!   message that carries `<name> /<service>/<method>` (and grpc-status 0).
//! - `--tcp PORT`: writes `<name> <client ip>` as a first line, then echoes
//!   everything it receives.
//!
//! Every accepted connection is logged on stdout as `accepted <port> <peer>`
//! so tests can tell what reached the application and from where.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut name = "pod".to_string();
    let mut listeners = Vec::new();
    let mut status = 200u16;
    let mut grpc = None;
    let mut body_file: Option<String> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = value.clone(),
            "--http-status" => status = value.parse().expect("a status code"),
            "--http-body-file" => body_file = Some(value.clone()),
            "--grpc" => grpc = Some(value.parse::<u16>().expect("a port")),
            "--http" | "--tcp" => {
                let l = TcpListener::bind(("0.0.0.0", value.parse::<u16>().expect("a port")))
                    .expect("bind");
                listeners.push((flag == "--http", l));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let mut threads = Vec::new();
    if let Some(port) = grpc {
        let name = name.clone();
        threads.push(std::thread::spawn(move || grpc_server(port, &name)));
    }
    for (http, listener) in listeners {
        let name = name.clone();
        let body_file = body_file.clone();
        threads.push(std::thread::spawn(move || {
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            for conn in listener.incoming().flatten() {
                let peer = conn
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                println!("accepted {port} {peer}");
                let _ = std::io::stdout().flush();
                let name = name.clone();
                let fixed = body_file.as_ref().map(|f| {
                    std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {f}: {e}"))
                });
                std::thread::spawn(move || {
                    let _ = if http {
                        serve_http(conn, &name, &peer, status, fixed)
                    } else {
                        serve_tcp(conn, &name, &peer)
                    };
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

fn serve_http(
    conn: TcpStream,
    name: &str,
    peer: &str,
    status: u16,
    fixed: Option<String>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut line = String::new();
    let mut length = 0usize;
    // Echoed back, so tests can see what a proxy propagated.
    let mut traceparent = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("traceparent") {
                traceparent = format!("x-echo-traceparent: {}\r\n", v.trim());
            }
        }
    }
    // Read the body so that closing does not reset the connection.
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("?");
    let target = parts.next().unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    if let Some(ms) = param("delay_ms") {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let status = param("status").map_or(status, |s| s as u16);
    let (body, kind) = match fixed {
        Some(b) => (b, "application/json"),
        None => (format!("hello from {name}, you are {peer}\n"), "text/plain"),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\nx-echo-request: {method} {target}\r\n{traceparent}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// gRPC over h2c: every call gets one message (a protobuf string in field
/// 1) naming this pod and the method, then `grpc-status: 0`.
fn grpc_server(port: u16, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .expect("bind grpc");
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            println!("accepted {port} {}", peer.ip());
            let _ = std::io::stdout().flush();
            let name = name.to_string();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let text = format!("{name} {}", request.uri().path());
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let mut message = vec![0x0a, text.len() as u8];
                        message.extend_from_slice(text.as_bytes());
                        let mut frame = vec![0u8];
                        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                        frame.extend_from_slice(&message);
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .expect("response");
                        let Ok(mut send) = respond.send_response(response, false) else {
                            return;
                        };
                        let _ = send.send_data(bytes::Bytes::from(frame), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
}

fn serve_tcp(mut conn: TcpStream, name: &str, peer: &str) -> std::io::Result<()> {
    writeln!(conn, "{name} {peer}")?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}
