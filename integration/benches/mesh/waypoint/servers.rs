//! The peers the waypoint is judged against and the server behind every
//! proxy: nginx and haproxy from Debian, each with its own configuration
//! file in the cluster's directory (never the system service), one worker,
//! no access log, keep-alive on both sides.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::cluster::curl_status_in;
use integration::cluster::host::Proc;

use crate::method;

/// The backend's HTTP/1.1 port, and the proxies' HTTP/1.1 front.
pub const HTTP1_PORT: u16 = 8080;
/// Cleartext HTTP/2 with prior knowledge (nginx 1.22 `listen … http2`).
pub const H2C_PORT: u16 = 8081;
/// haproxy's cleartext HTTP/2 front (`bind … proto h2`).
pub const HAPROXY_H2C_PORT: u16 = 8082;
/// What every request gets back.
pub const BODY_BYTES: usize = 1024;

const NGINX: &str = "/usr/sbin/nginx";
const HAPROXY: &str = "/usr/sbin/haproxy";

/// nginx serving the 1 KiB body on [`HTTP1_PORT`] and [`H2C_PORT`] in the
/// pod `netns`, pinned to the load CPU. Every answer names the address it
/// came from (`x-peer`), so a check can tell which proxy it crossed.
pub fn backend(dir: &Path, name: &str, netns: &str) -> Proc {
    let body = format!("{}\n", "x".repeat(BODY_BYTES - 1));
    let server = format!(
        "    server {{\n        listen {HTTP1_PORT} default_server;\n        listen {H2C_PORT} http2 default_server;\n        default_type text/plain;\n        location / {{\n            add_header x-peer $remote_addr;\n            return 200 \"{body}\";\n        }}\n    }}\n"
    );
    let proc = nginx(dir, name, netns, &server);
    method::pin(proc.pid(), &method::LOAD_CPU.to_string());
    wait_answering(netns, HTTP1_PORT, false);
    wait_answering(netns, H2C_PORT, true);
    proc
}

/// nginx as a reverse proxy to `backend`'s [`HTTP1_PORT`] (HTTP/1.1, with
/// a pool of kept-alive upstream connections), fronting HTTP/1.1 on
/// [`HTTP1_PORT`] and h2c on [`H2C_PORT`]; pinned to the proxy CPU.
pub fn nginx_proxy(dir: &Path, netns: &str, backend: std::net::Ipv4Addr) -> Proc {
    let server = format!(
        "    upstream backend {{\n        server {backend}:{HTTP1_PORT};\n        keepalive 256;\n        keepalive_requests 1000000000;\n    }}\n    server {{\n        listen {HTTP1_PORT} default_server;\n        listen {H2C_PORT} http2 default_server;\n        location / {{\n            proxy_pass http://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n    }}\n"
    );
    let proc = nginx(dir, "nginx-proxy", netns, &server);
    method::pin(proc.pid(), &method::PROXY_CPU.to_string());
    wait_answering(netns, HTTP1_PORT, false);
    wait_answering(netns, H2C_PORT, true);
    proc
}

/// haproxy (one thread) as a reverse proxy to `backend`'s [`HTTP1_PORT`],
/// fronting h2c on [`HAPROXY_H2C_PORT`], reusing upstream connections;
/// pinned to the proxy CPU.
pub fn haproxy(dir: &Path, netns: &str, backend: std::net::Ipv4Addr) -> Proc {
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n    nbthread 1\n    maxconn 4000\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    timeout http-keep-alive 60s\n    http-reuse always\n\nfrontend h2c\n    bind :{HAPROXY_H2C_PORT} proto h2\n    default_backend backend\n\nbackend backend\n    server backend {backend}:{HTTP1_PORT}\n"
        ),
    )
    .expect("write haproxy.cfg");
    let proc = Proc::spawn(
        "haproxy",
        netns,
        Path::new(HAPROXY),
        &["-db", "-f", &conf.display().to_string()],
        &[],
        dir.join("haproxy.log"),
    );
    method::pin(proc.pid(), &method::PROXY_CPU.to_string());
    wait_answering(netns, HAPROXY_H2C_PORT, true);
    proc
}

/// One nginx process (no master: the process started is the one that
/// works, so its CPU time is the server's) with `servers` as its `http`
/// block's content.
fn nginx(dir: &Path, name: &str, netns: &str, servers: &str) -> Proc {
    let d = dir.display();
    let conf = dir.join(format!("{name}.conf"));
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {d}/{name}-{t};\n"))
        .collect();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\nevents {{\n    worker_connections 8000;\n}}\nhttp {{\n    access_log off;\n{temp}    keepalive_timeout 300s;\n    keepalive_requests 1000000000;\n{servers}}}\n"
        ),
    )
    .expect("write nginx config");
    let error_log = format!("{d}/{name}-error.log");
    Proc::spawn(
        name,
        netns,
        Path::new(NGINX),
        &["-e", &error_log, "-c", &conf.display().to_string()],
        &[],
        dir.join(format!("{name}.log")),
    )
}

/// Waits until `127.0.0.1:port` in `netns` answers 200 (over h2c with
/// prior knowledge when `h2c`).
fn wait_answering(netns: &str, port: u16, h2c: bool) {
    let url = format!("http://127.0.0.1:{port}/");
    let mut args = vec!["-o", "/dev/null", "--max-time", "1"];
    if h2c {
        args.push("--http2-prior-knowledge");
    }
    args.push(&url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = curl_status_in(netns, &args);
        if reply.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} in {netns} does not answer (last: {reply})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
