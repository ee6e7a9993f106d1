//! An application inside an enrolled pod trying to get around its capture
//! without privileges (reliability.md §5 R5): marking its packets as
//! ztunnel's, spoofing the kubelet probes' source address, or using UDP.
//! Needs root; runs with either redirection.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use integration::cluster::capture::Capture;
use integration::cluster::{Cluster, HTTP_PORT, TCP_PORT, cni::POD_INTERFACE};
use socket2::{Domain, Protocol, Socket, Type};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
/// The mark ztunnel puts on its own sockets, which the pod's rules let by.
const ZTUNNEL_MARK: u32 = 0x539;
/// The source the node gives kubelet probes, which the pod's rules let in.
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);

/// `CAP_NET_RAW`, which container runtimes grant by default: it allows
/// `IP_TRANSPARENT`, and so binding an address the pod does not have.
const CAP_NET_RAW: u32 = 1 << 13;

/// Runs `f` on a thread inside `netns` with every capability dropped but
/// `keep`, as an application in a pod runs (capabilities are per thread).
fn as_application<T: Send + 'static>(
    netns: &str,
    keep: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let ns = std::fs::File::open(format!("/var/run/netns/{netns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        keep_only_capabilities(keep);
        f()
    })
    .join()
    .unwrap()
}

/// capset(2) with only `keep` (of the first 32) effective and permitted,
/// for the calling thread only (nix and std have no per-thread way;
/// setresuid in glibc changes every thread of the test process).
#[allow(unsafe_code)]
fn keep_only_capabilities(keep: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [
        Data {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads one header and two data structs, laid out as the
    // kernel's for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(
        status.contains(&format!("CapEff:\t{keep:016x}")),
        "capabilities other than {keep:#x} still effective: {status}"
    );
}

#[test]
fn an_application_without_net_admin_cannot_mark_or_spoof_its_way_past_the_capture() {
    let mut c = Cluster::start(&["node-a"]);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("client", "node-a"), ("server", "node-a")]);
    c.write_manifest(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: apps}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    c.wait_for("ztunnel has the STRICT policy for the server", |c| {
        // The server's workload lists the static STRICT policy
        // (PeerAuthentication becomes a DENY without identity, as Istio's
        // istiod writes it). The policy itself is always published, so
        // finding its name anywhere in the dump proves nothing: a run that
        // looked for that connected before STRICT applied.
        let dump = c.ztunnel_config_dump("node-a");
        dump["workloads"].as_array().is_some_and(|ws| {
            ws.iter().any(|w| {
                w["name"] == "server"
                    && w["authorizationPolicies"].as_array().is_some_and(|p| {
                        p.iter().any(|p| {
                            p.as_str()
                                .is_some_and(|p| p.ends_with("/istio_converted_static_strict"))
                        })
                    })
            })
        })
    });
    let (client, server) = (c.get("apps", "client"), c.get("apps", "server"));
    let url = format!("http://{}:{HTTP_PORT}/", server.ip);
    c.curl_over_mtls(client, &url, server);
    let server_addr = SocketAddr::from((server.ip, TCP_PORT));

    // ztunnel's mark: refused by the kernel without privileges.
    let mark = || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_mark(ZTUNNEL_MARK)
            .map(|()| s)
            .map_err(|e| e.raw_os_error())
    };
    let unprivileged = as_application(&client.netns, 0, move || mark().map(drop));
    assert_eq!(
        unprivileged,
        Err(Some(libc::EPERM)),
        "SO_MARK 0x539 with no capability"
    );
    // Since Linux 5.17 CAP_NET_RAW is enough to set a mark, and containers
    // have it by default: the marked connection skips the client's capture
    // and leaves in plaintext, without the client's identity. The server's
    // capture still holds: under STRICT it is refused before the app.
    let served_before = c.app_log(server).lines().count();
    let marked = as_application(&client.netns, CAP_NET_RAW, move || {
        let s = mark().map_err(|e| format!("SO_MARK: {e:?}"))?;
        s.connect_timeout(&server_addr.into(), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::net::TcpStream::from(s)),
            &mut line,
        );
        Ok::<_, String>(line)
    });
    eprintln!("marked connection with CAP_NET_RAW: {marked:?}");
    assert!(
        !marked.as_ref().is_ok_and(|line| line.starts_with("server")),
        "a marked plaintext connection reached the server under STRICT: {marked:?}"
    );
    assert_eq!(c.app_log(server).lines().count(), served_before);

    // The probes' source. Without privileges the kernel will not route
    // from an address the pod does not have, even with IP_FREEBIND.
    let unprivileged = as_application(&client.netns, 0, move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_freebind_v4(true).unwrap();
        s.bind(&SocketAddr::from((PROBE_SOURCE, 0)).into()).unwrap();
        s.connect_timeout(&server_addr.into(), Duration::from_secs(3))
            .map_err(|e| e.raw_os_error())
    });
    assert_eq!(unprivileged, Err(Some(libc::ENETUNREACH)));
    // With CAP_NET_RAW (a container's default) IP_TRANSPARENT lets the
    // SYN leave with the probes' source: it must not reach the server
    // around ztunnel.
    let cap = Capture::start(&server.netns, POD_INTERFACE, c.dir.path());
    let spoofed = as_application(&client.netns, CAP_NET_RAW, move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_ip_transparent_v4(true).unwrap();
        s.bind(&SocketAddr::from((PROBE_SOURCE, 0)).into()).unwrap();
        s.connect_timeout(&server_addr.into(), Duration::from_secs(3))
            .map_err(|e| e.to_string())
    });
    // A legitimate connection in the same capture: it shows the capture
    // sees the server's traffic (as HBONE to 15008).
    let echoed = c
        .socat(client, &server_addr.to_string(), "legit\n")
        .unwrap();
    assert!(echoed.ends_with("legit\n"), "{echoed:?}");
    let segments = cap.finish();
    assert!(
        segments.iter().any(|s| s.dst == (server.ip, 15008)),
        "the capture saw no HBONE to the server: is it working?"
    );
    let around: Vec<_> = segments
        .iter()
        .filter(|s| s.src.0 == PROBE_SOURCE)
        .collect();
    assert!(
        around.is_empty(),
        "spoofed-source segments reached the server pod (connect: {spoofed:?}): {} of them",
        around.len()
    );
    assert!(
        !c.app_log(server).contains(&PROBE_SOURCE.to_string()),
        "the server accepted a connection from the probe source"
    );
    eprintln!("spoofed-source connect: {spoofed:?}");

    // UDP is not captured (as in Istio's ambient mode, DNS aside): it
    // reaches the server in plaintext, from the client's own address.
    let receiver = mesh_netns::Netns::open(format!("/var/run/netns/{}", server.netns))
        .unwrap()
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9999)).unwrap())
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let to = SocketAddr::from((server.ip, 9999));
    as_application(&client.netns, CAP_NET_RAW, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        assert!(s.as_raw_fd() > 0);
        s.send_to(b"udp-datagram", to).unwrap();
    });
    let mut buf = [0u8; 64];
    let (n, from) = receiver
        .recv_from(&mut buf)
        .expect("UDP passes uncaptured (documented)");
    assert_eq!(&buf[..n], b"udp-datagram");
    assert_eq!(from.ip(), std::net::IpAddr::V4(client.ip));
}
