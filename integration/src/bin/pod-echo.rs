//! `pod-echo`: the application in test pods. It needs no mesh awareness:
//!
//! - `--http PORT`: answers any HTTP/1.1 request with
//!   `hello from <name>, you are <client ip>` and closes.
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
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = value.clone(),
            "--http" | "--tcp" => {
                let l = TcpListener::bind(("0.0.0.0", value.parse::<u16>().expect("a port")))
                    .expect("bind");
                listeners.push((flag == "--http", l));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let mut threads = Vec::new();
    for (http, listener) in listeners {
        let name = name.clone();
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
                std::thread::spawn(move || {
                    let _ = if http {
                        serve_http(conn, &name, &peer)
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

fn serve_http(conn: TcpStream, name: &str, peer: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    // The request line and headers; the body (if any) is not read.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("hello from {name}, you are {peer}\n");
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
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
