//! Transparent capture in the network-namespace cluster: unmodified
//! clients in pods, the real CNI plugins, our chained plugin and node agent,
//! ztunnel in in-pod mode. Needs root; `cargo xtask e2e` runs it.

use integration::cluster::capture::{self, Capture};
use integration::cluster::{Cluster, HTTP_PORT, PodSpec, Redirect, TCP_PORT, host};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// A client on node-a and servers on both nodes, all enrolled, with a
/// service over the server on node-b.
fn two_node_mesh() -> Cluster {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("apps", &[AMBIENT]);
    c.pod(PodSpec::new("apps", "client", "node-a"));
    c.pod(PodSpec::new("apps", "local", "node-a"));
    c.pod(PodSpec::new("apps", "remote", "node-b"));
    for name in ["client", "local", "remote"] {
        let pod = c.get("apps", name);
        c.wait_for(&format!("apps/{name} is captured"), |c| c.captured(pod));
    }
    c
}

#[test]
fn unmodified_clients_reach_servers_by_pod_ip_and_vip_and_servers_see_the_client() {
    let mut c = two_node_mesh();
    let vip = c.service("apps", "remote", "remote");
    let client = c.get("apps", "client");
    let client_ip = client.ip.to_string();

    for server in ["local", "remote"] {
        let ip = c.get("apps", server).ip;
        let body = c.curl_eventually(client, &format!("http://{ip}:{HTTP_PORT}/"));
        assert_eq!(
            body,
            format!("hello from {server}, you are {client_ip}\n"),
            "curl to {server} by pod IP"
        );
        let echoed = c
            .socat(client, &format!("{ip}:{TCP_PORT}"), "ping\n")
            .unwrap();
        assert_eq!(
            echoed,
            format!("{server} {client_ip}\nping\n"),
            "socat to {server}"
        );
    }
    let body = c.curl_eventually(client, &format!("http://{vip}:{HTTP_PORT}/"));
    assert_eq!(
        body,
        format!("hello from remote, you are {client_ip}\n"),
        "curl by service VIP"
    );
    let echoed = c
        .socat(client, &format!("{vip}:{TCP_PORT}"), "pong\n")
        .unwrap();
    assert_eq!(
        echoed,
        format!("remote {client_ip}\npong\n"),
        "socat by service VIP"
    );

    // The agent says how it captured them; in eBPF mode the programs
    // counted the six connections the client opened (and nothing dropped).
    c.wait_for("the agent counted the client's connections", |c| {
        let status = c.agent_status("node-a");
        assert_eq!(
            status["redirection"]["mode"],
            c.redirect.as_str(),
            "{status}"
        );
        if c.redirect != Redirect::Ebpf {
            return true;
        }
        let counters = &status["redirection"]["ebpf"]["counters"];
        assert_eq!(counters["droppedNoListener"], 0, "{status}");
        counters["outboundCaptured"].as_u64().unwrap_or(0) >= 6
    });
    // So does ztunnel, beside the pods it serves.
    let dump = c.ztunnel_config_dump("node-a");
    assert_eq!(
        dump["config"]["inpod"]["redirection"],
        c.redirect.as_str(),
        "{dump}"
    );
    let uid = &c.get("apps", "client").uid;
    assert_eq!(dump["workloadState"][uid]["state"], "up", "{dump}");
}

#[test]
fn between_nodes_the_payload_is_never_in_clear_and_every_tunnel_is_tls() {
    let mut c = two_node_mesh();
    // STRICT mTLS: a request that succeeds went through the tunnel, so the
    // warm-up below proves node-a's ztunnel knows the destination. (Before
    // that, a destination unknown to the source ztunnel is treated as
    // outside the mesh, as Istio's ztunnel does, and STRICT refuses it.)
    c.write_manifest(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: apps}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    let remote_ip = c.get("apps", "remote").ip;
    c.curl_eventually(
        c.get("apps", "client"),
        &format!("http://{remote_ip}:{HTTP_PORT}/"),
    );
    c.pod(PodSpec::new("apps", "client2", "node-a"));
    let client = c.get("apps", "client2");
    c.wait_for("apps/client2 is captured", |c| c.captured(client));
    let remote = c.get("apps", "remote");
    // The capture starts before client2's first connection, so it sees
    // every tunnel from its first packet.
    let uplink = &c.node("node-a").uplink;
    let cap = Capture::start(&c.lan, uplink, c.dir.path());
    c.curl_eventually(client, &format!("http://{}:{HTTP_PORT}/", remote.ip));
    let marker = format!("MARKER-{:016x}", rand_u64());
    for _ in 0..3 {
        let echoed = c
            .socat(
                client,
                &format!("{}:{TCP_PORT}", remote.ip),
                &format!("{marker}\n"),
            )
            .unwrap();
        assert!(echoed.ends_with(&format!("{marker}\n")), "echo: {echoed:?}");
        let body = c
            .curl(
                client,
                &format!("http://{}:{HTTP_PORT}/{marker}", remote.ip),
            )
            .unwrap();
        assert!(body.starts_with("hello from remote"), "{body}");
    }
    let segments = cap.finish();

    assert!(
        !capture::contains(&segments, marker.as_bytes()),
        "the payload marker crossed the link between nodes in clear"
    );
    let opened: Vec<_> = segments
        .iter()
        .filter(|s| s.syn && s.dst.1 == 15008)
        .map(|s| (s.src, s.dst))
        .collect();
    let tunnels = capture::flows_to_port(&segments, 15008);
    for flow in tunnels.keys() {
        assert!(
            opened.contains(flow),
            "{flow:?} was not seen from its first packet"
        );
    }
    assert!(
        !tunnels.is_empty(),
        "no HBONE connection was captured: {} segments",
        segments.len()
    );
    for ((client_end, server_end), (hello, reply)) in &tunnels {
        assert_eq!(
            hello.first(),
            Some(&0x16),
            "{client_end:?} -> {server_end:?} did not start with a TLS handshake"
        );
        // A tunnel the server refused early (the mesh still converging) may
        // carry nothing back; whatever it carries starts as TLS.
        if let Some(first) = reply.first() {
            assert_eq!(
                *first, 0x16,
                "{server_end:?} did not answer with a TLS handshake"
            );
        }
    }
    assert!(
        tunnels
            .values()
            .any(|(_, reply)| reply.first() == Some(&0x16)),
        "no tunnel completed a TLS handshake"
    );
    for app_port in [HTTP_PORT, TCP_PORT] {
        assert!(
            capture::flows_to_port(&segments, app_port).is_empty(),
            "a plaintext connection to port {app_port} crossed between nodes"
        );
    }
}

#[test]
fn labelling_a_namespace_enrolls_running_pods_and_unlabelling_releases_them() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("shop", &[]);
    c.pod(PodSpec::new("shop", "client", "node-a"));
    c.pod(PodSpec::new("shop", "server", "node-b"));
    let (client, server) = (c.get("shop", "client"), c.get("shop", "server"));
    let pids = (client.app.pid(), server.app.pid());
    let inodes = (c.pod_netns_inode(client), c.pod_netns_inode(server));
    assert!(
        c.pod_rules(client).is_none(),
        "a pod outside the mesh got rules"
    );
    let url = format!("http://{}:{HTTP_PORT}/", server.ip);
    c.curl_eventually(client, &url);
    // A policy that only applies in the mesh: nobody may call the server.
    c.write_manifest(
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{}]\n",
    );

    c.namespace("shop", &[AMBIENT]);
    let (client, server) = (c.get("shop", "client"), c.get("shop", "server"));
    c.wait_for("both pods are captured", |c| {
        c.captured(client) && c.captured(server)
    });
    assert!(c.pod_rules(client).is_some() && c.pod_rules(server).is_some());
    c.wait_for("the mesh enforces the DENY policy", |c| {
        c.curl(client, &url).is_err()
    });

    c.namespace("shop", &[]);
    let (client, server) = (c.get("shop", "client"), c.get("shop", "server"));
    c.wait_for("both pods are released", |c| {
        c.pod_rules(client).is_none() && c.pod_rules(server).is_none()
    });
    let body = c.curl_eventually(client, &url);
    assert_eq!(body, format!("hello from server, you are {}\n", client.ip));

    // Neither pod was restarted or re-created.
    assert_eq!((client.app.pid(), server.app.pid()), pids);
    assert_eq!(
        (c.pod_netns_inode(client), c.pod_netns_inode(server)),
        inodes
    );
}

#[test]
fn with_ztunnel_stopped_enrolled_pods_fail_closed_and_the_snapshot_restores_them() {
    let mut c = two_node_mesh();
    let url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "local").ip);
    c.curl_eventually(c.get("apps", "client"), &url);
    let pid = c.get("apps", "client").app.pid();

    c.stop_ztunnel("node-a");
    let client = c.get("apps", "client");
    let local = c.get("apps", "local");
    let served_before = c.app_log(local).lines().count();
    let err = c
        .curl(client, &url)
        .expect_err("a captured pod's connection must fail without ztunnel");
    assert!(
        err.contains("exit 7") || err.contains("exit 28"),
        "expected a refused (nftables) or timed-out (eBPF: the SYN is dropped) connection, got {err}"
    );
    let err = c
        .socat(
            client,
            &format!("{}:{TCP_PORT}", c.get("apps", "remote").ip),
            "x\n",
        )
        .expect_err("cross-node too");
    assert!(!err.is_empty());
    assert_eq!(
        c.app_log(local).lines().count(),
        served_before,
        "nothing may reach the application while ztunnel is down"
    );
    assert!(
        c.pod_rules(client).is_some(),
        "the rules stay while ztunnel is down"
    );

    c.start_ztunnel("node-a");
    let body = c.curl_eventually(c.get("apps", "client"), &url);
    assert_eq!(
        body,
        format!("hello from local, you are {}\n", c.get("apps", "client").ip)
    );
    assert_eq!(
        c.get("apps", "client").app.pid(),
        pid,
        "the pod was not restarted"
    );
}

/// reliability.md R8: what changed while ztunnel was away reaches it in the
/// node agent's snapshot. A running pod enrolled meanwhile is captured at
/// once (its connections refused), and gets its listeners when ztunnel
/// starts; a pod deleted meanwhile leaves nothing behind in ztunnel.
#[test]
fn pods_enrolled_and_deleted_while_ztunnel_is_stopped_are_right_after_its_snapshot() {
    let mut c = Cluster::start(&["node-a"]);
    c.namespace("apps", &[AMBIENT]);
    c.namespace("late", &[]);
    for name in ["a1", "a2"] {
        c.pod(PodSpec::new("apps", name, "node-a"));
        let pod = c.get("apps", name);
        c.wait_for(&format!("apps/{name} is captured"), |c| c.captured(pod));
    }
    c.pod(PodSpec::new("late", "a3", "node-a"));
    let a1_url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "a1").ip);
    let a2 = c.get("apps", "a2");
    let (a2_uid, a2_inode) = (a2.uid.clone(), c.pod_netns_inode(a2));

    c.stop_ztunnel("node-a");
    assert!(c.delete_pod("apps", "a2"));
    c.namespace("late", &[AMBIENT]);
    let a3 = c.get("late", "a3");
    c.wait_for("late/a3 is captured while ztunnel is stopped", |c| {
        c.captured(a3)
    });
    assert!(c.pod_rules(a3).is_some());
    let served_before = c.app_log(c.get("apps", "a1")).lines().count();
    c.curl(a3, &a1_url)
        .expect_err("a pod captured without ztunnel must not reach anything");
    assert_eq!(
        c.app_log(c.get("apps", "a1")).lines().count(),
        served_before,
        "nothing may pass in plaintext while ztunnel is down"
    );

    c.start_ztunnel("node-a");
    let a3 = c.get("late", "a3");
    c.wait_for("ztunnel listens in late/a3's namespace", |_| {
        let listening = host::ns_sh(&a3.netns, "ss", &["-Hltn"]);
        ["15001", "15006", "15008"]
            .iter()
            .all(|p| listening.contains(&format!(":{p} ")))
    });
    c.curl_over_mtls(a3, &a1_url, c.get("apps", "a1"));

    let dump = c.ztunnel_config_dump("node-a");
    let states = dump["workloadState"]
        .as_object()
        .expect("ztunnel reports its pods");
    let served = |ns: &str, name: &str| {
        states
            .values()
            .any(|s| s["namespace"] == ns && s["name"] == name)
    };
    assert!(served("apps", "a1") && served("late", "a3"), "{states:?}");
    assert!(
        !served("apps", "a2") && !states.contains_key(&a2_uid),
        "ztunnel serves a pod deleted while it was stopped: {states:?}"
    );
    // Nor does it hold anything in the deleted pod's network namespace.
    let pid = c.ztunnel_pid("node-a");
    let held = format!("net:[{a2_inode}]");
    let mut links: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        links.push(task.unwrap().path().join("ns/net"));
    }
    for link in links {
        if let Ok(target) = std::fs::read_link(&link) {
            assert_ne!(
                target.to_string_lossy(),
                held,
                "{} still refers to the deleted pod's namespace",
                link.display()
            );
        }
    }
}

#[test]
fn cni_add_fails_closed_without_the_agent_and_pods_outside_the_mesh_are_untouched() {
    let mut c = Cluster::start(&["node-a"]);
    c.namespace("apps", &[AMBIENT]);
    c.namespace("plain", &[]);
    c.stop_agent("node-a");

    let err = c
        .try_pod(PodSpec::new("apps", "web", "node-a"))
        .err()
        .expect("CNI ADD of an enrolled pod must fail without the node agent");
    assert!(
        err.contains("apps/web") && err.contains("node agent") && err.contains("unreachable"),
        "unclear error: {err}"
    );
    assert!(!std::path::Path::new(&format!("/var/run/netns/{}-apps-web", c.prefix)).exists());

    // A pod outside the mesh starts and works, agent or not.
    c.pod(PodSpec::new("plain", "a", "node-a"));
    c.pod(PodSpec::new("plain", "b", "node-a"));
    let (a, b) = (c.get("plain", "a"), c.get("plain", "b"));
    assert!(c.pod_rules(a).is_none());
    let body = c.curl(a, &format!("http://{}:{HTTP_PORT}/", b.ip)).unwrap();
    assert_eq!(body, format!("hello from b, you are {}\n", a.ip));
    // A pod that opts out inside an enrolled namespace starts too.
    c.pod(PodSpec::new("apps", "opted-out", "node-a").label("istio.io/dataplane-mode", "none"));

    // With the agent back, the enrolled pod starts and is captured.
    c.start_agent("node-a");
    c.wait_for("ztunnel reconnects", |c| {
        c.agent_status("node-a")["ztunnelsConnected"].as_u64() == Some(1)
    });
    c.pod(PodSpec::new("apps", "web", "node-a"));
    assert!(c.pod_rules(c.get("apps", "web")).is_some());
}

#[test]
fn flushed_rules_are_put_back_within_five_seconds() {
    let c = two_node_mesh();
    let client = c.get("apps", "client");
    let rules = c.pod_rules(client).expect("captured pod has rules");
    c.remove_capture_by_hand(client);
    assert!(c.pod_rules(client).is_none(), "the flush took effect");
    let flushed = std::time::Instant::now();
    while c.pod_rules(client).is_none() {
        assert!(
            flushed.elapsed() < std::time::Duration::from_secs(5),
            "rules not repaired within 5s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(c.pod_rules(client).unwrap(), rules);
    let url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "remote").ip);
    c.curl_eventually(client, &url);
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[test]
fn an_agent_restart_keeps_captured_pods_served() {
    let mut c = two_node_mesh();
    let url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "local").ip);
    c.curl_over_mtls(c.get("apps", "client"), &url, c.get("apps", "local"));

    c.stop_agent("node-a");
    // Without the agent, ztunnel keeps serving the pods it has.
    c.curl(c.get("apps", "client"), &url)
        .expect("served while the agent is away");
    c.start_agent("node-a");
    let client = c.get("apps", "client");
    c.wait_for("the restarted agent adopts the captured pods", |c| {
        c.captured(client) && c.agent_status("node-a")["ztunnelsConnected"].as_u64() == Some(1)
    });
    // The new agent's snapshot named every pod, so ztunnel dropped none.
    for _ in 0..5 {
        let body = c
            .curl(client, &url)
            .expect("served after the agent restarted");
        assert_eq!(body, format!("hello from local, you are {}\n", client.ip));
    }
    assert!(c.pod_rules(client).is_some());
}

/// reliability.md D1: on SIGTERM ztunnel stops taking connections at once,
/// lets the ones in flight finish, ends the long ones at the termination
/// deadline and exits right after it.
#[test]
fn sigterm_drains_ztunnel_in_flight_requests_finish_and_long_connections_end_at_the_deadline() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const DEADLINE: Duration = Duration::from_secs(3);
    let mut c = two_node_mesh();
    c.ztunnel_env = vec![("CONNECTION_TERMINATION_DEADLINE", "3s".into())];
    c.stop_ztunnel("node-b");
    c.start_ztunnel("node-b");
    let netns = c.get("apps", "client").netns.clone();
    let remote = c.get("apps", "remote").ip;
    let url = format!("http://{remote}:{HTTP_PORT}/");
    c.curl_eventually(c.get("apps", "client"), &url);
    let curl = |netns: &str, url: &str, max_time: &str| {
        integration::cluster::curl_status_in(netns, &["--max-time", max_time, url])
    };

    // Three long connections, held open by their clients.
    let mut long: Vec<std::process::Child> = (0..3)
        .map(|_| {
            // Its standard input stays open (the pipe is held): only the
            // far end can end the connection.
            Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .args(["socat", "-T", "60", "-"])
                .arg(format!("TCP:{remote}:{TCP_PORT}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        long.iter_mut().all(|p| p.try_wait().unwrap().is_none()),
        "long connections open"
    );
    // A request still being answered when the drain starts.
    let slow = {
        let (netns, url) = (netns.clone(), format!("{url}?delay_ms=1500"));
        std::thread::spawn(move || curl(&netns, &url, "10"))
    };
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    c.signal_ztunnel("node-b", "TERM");
    std::thread::sleep(Duration::from_millis(300));
    // Refused (nftables) or dropped (eBPF: no listener to assign to):
    // either way not served, and never passed through.
    let new = curl(&netns, &url, "1");
    assert_eq!(
        new.status, 0,
        "a new connection was taken during the drain: {new}"
    );
    slow.join().unwrap().assert_status(200);
    // Still inside the deadline: the long connections are still served.
    assert!(started.elapsed() < DEADLINE);
    assert!(
        long.iter_mut().all(|p| p.try_wait().unwrap().is_none()),
        "a long connection was cut before the deadline"
    );

    while !c.ztunnel_exited("node-b") {
        assert!(
            started.elapsed() < DEADLINE + Duration::from_secs(2),
            "ztunnel still running: {}",
            c.node_logs("node-b")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = started.elapsed();
    assert!(
        exited >= DEADLINE && exited <= DEADLINE + Duration::from_secs(1),
        "exit {exited:?} after SIGTERM, with a {DEADLINE:?} deadline"
    );
    // The long connections were ended by the drain, not left hanging
    // (socat lingers 0.5 s after the far end closes).
    let gone_by = Instant::now() + Duration::from_secs(2);
    for p in &mut long {
        while p.try_wait().unwrap().is_none() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = p.try_wait().unwrap().is_some();
        if !ended {
            let _ = p.kill();
        }
        assert!(ended, "a long connection outlived the drain");
    }
    c.start_ztunnel("node-b");
    c.curl_eventually(c.get("apps", "client"), &url);
}

/// reliability.md D3: a second signal during the drain (SIGINT, or the
/// SIGKILL a kubelet sends at the grace period's end) ends ztunnel at once;
/// the next ztunnel recovers the pods from the snapshot with one listener
/// per port in each pod's namespace.
#[test]
fn a_second_signal_during_the_drain_exits_at_once_and_the_next_start_recovers() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let mut c = two_node_mesh();
    // A drain that would hold the long connection for a minute.
    c.ztunnel_env = vec![("CONNECTION_TERMINATION_DEADLINE", "60s".into())];
    c.stop_ztunnel("node-b");
    c.start_ztunnel("node-b");
    let client = c.get("apps", "client");
    let remote = c.get("apps", "remote");
    let url = format!("http://{}:{HTTP_PORT}/", remote.ip);
    c.curl_over_mtls(client, &url, remote);
    let (netns, remote_ip) = (client.netns.clone(), remote.ip);
    let listeners = |netns: &str| {
        let out = host::ns_sh(netns, "ss", &["-Hltn"]);
        ["15001", "15006", "15008"].map(|p| {
            out.lines()
                .filter(|l| l.contains(&format!(":{p} ")))
                .count()
        })
    };

    for second in ["INT", "KILL"] {
        let mut long = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{netns}"))
            .args(["socat", "-T", "120", "-"])
            .arg(format!("TCP:{remote_ip}:{TCP_PORT}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(long.try_wait().unwrap().is_none(), "long connection open");

        c.signal_ztunnel("node-b", "TERM");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            c.ztunnel_exit_status("node-b").is_none(),
            "ztunnel must still be draining the long connection"
        );
        let started = Instant::now();
        c.signal_ztunnel("node-b", second);
        let status = loop {
            if let Some(s) = c.ztunnel_exit_status("node-b") {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "ztunnel still running 1 s after SIG{second} during the drain: {}",
                c.node_logs("node-b")
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            !status.success(),
            "a cut-short drain is not a success: {status}"
        );
        if second == "INT" {
            assert!(
                c.node_logs("node-b")
                    .contains("a second signal during the drain"),
                "ztunnel must say why it exits early"
            );
        }
        // The long connection went with it, and nothing listens for the
        // pod until the next ztunnel.
        let gone_by = Instant::now() + Duration::from_secs(2);
        while long.try_wait().unwrap().is_none() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = long.try_wait().unwrap().is_some();
        let _ = long.kill();
        assert!(ended, "the long connection outlived ztunnel");
        assert_eq!(listeners(&c.get("apps", "remote").netns), [0, 0, 0]);

        c.start_ztunnel("node-b");
        let (client, remote) = (c.get("apps", "client"), c.get("apps", "remote"));
        c.curl_eventually(client, &url);
        assert_eq!(
            listeners(&remote.netns),
            [1, 1, 1],
            "one listener per port in the pod's namespace after SIG{second}"
        );
    }
}

/// Stands in for `nft` on the node agent's PATH. While `<dir>/fail-after`
/// holds N, a ruleset fed on stdin gets a line nft cannot parse after its
/// N-th rule; the pod's whole ruleset is recorded before and after each
/// such transaction, with nft's exit code.
const FAULTY_NFT: &str = r#"#!/bin/bash
real=@REAL@
ctl=@DIR@
if [ "$1 $2" = "-f -" ] && [ -s "$ctl/fail-after" ]; then
  n=$(cat "$ctl/fail-after")
  call="$ctl/calls/$(date +%s%N)"
  "$real" list ruleset > "$call.before"
  awk -v n="$n" '{ print } /^\t\t/ && !/^\t\ttype / { if (++rules == n) print "\t\tthis is not nft syntax" }' \
    | "$real" -f - 2> "$call.stderr"
  rc=$?
  "$real" list ruleset > "$call.after"
  echo "$rc" > "$call.rc"
  cat "$call.stderr" >&2
  exit "$rc"
fi
exec "$real" "$@"
"#;

/// What the faulty nft recorded: (exit code, ruleset before, after), in
/// call order.
fn faulty_calls(dir: &std::path::Path) -> Vec<(i32, String, String)> {
    let calls = dir.join("calls");
    let mut stamps: Vec<String> = std::fs::read_dir(&calls)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rc").map(str::to_string)
        })
        .collect();
    stamps.sort();
    let read =
        |s: &str, ext: &str| std::fs::read_to_string(calls.join(format!("{s}.{ext}"))).unwrap();
    stamps
        .iter()
        .map(|s| {
            (
                read(s, "rc").trim().parse().unwrap(),
                read(s, "before"),
                read(s, "after"),
            )
        })
        .collect()
}

/// reliability.md R3: the pod's rules are one nft transaction, so an error
/// after any number of rules leaves the pod's ruleset exactly as it was:
/// empty for a new pod (whose CNI ADD then fails, and which the agent does
/// not report captured), and the earlier table for a pod whose rules are
/// being repaired. Once nft works again, both are captured in full.
#[test]
fn rules_that_fail_half_way_leave_the_pod_with_all_of_them_or_none() {
    let mut c = Cluster::start_with(&["node-a"], Redirect::Nftables);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods("apps", &[("kept", "node-a")]);
    let complete = c.pod_rules(c.get("apps", "kept")).expect("captured");
    // Rules as nft lists them: inside a chain, after its `type` line.
    let rules = complete
        .lines()
        .filter(|l| l.starts_with("\t\t") && !l.trim_start().starts_with("type "))
        .count();
    assert!(rules >= 10, "the table has its rules:\n{complete}");

    let dir = c.dir.path().join("faulty-nft");
    std::fs::create_dir_all(dir.join("calls")).unwrap();
    let real = integration::cluster::host::sh("sh", &["-c", "command -v nft"]);
    let script = FAULTY_NFT
        .replace("@REAL@", real.trim())
        .replace("@DIR@", dir.to_str().unwrap());
    let nft = dir.join("nft");
    std::fs::write(&nft, script).unwrap();
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    c.agent_env = vec![("PATH", path)];
    c.stop_agent("node-a");
    c.start_agent("node-a");
    // Settled before any fault: ztunnel back, the kept pod adopted.
    c.wait_for("ztunnel reconnects and the kept pod is adopted", |c| {
        c.agent_status("node-a")["ztunnelsConnected"].as_u64() == Some(1)
            && c.captured(c.get("apps", "kept"))
    });

    // New pods, the transaction broken after the first, a middle and the
    // last rule.
    for (i, n) in [1, rules / 2, rules].into_iter().enumerate() {
        std::fs::write(dir.join("fail-after"), n.to_string()).unwrap();
        let name = format!("new-{i}");
        let err = c
            .try_pod(PodSpec::new("apps", &name, "node-a"))
            .err()
            .unwrap_or_else(|| panic!("CNI ADD succeeded with the rules broken after rule {n}"));
        assert!(
            err.contains("exit status"),
            "the plugin must exit non-zero: {err}"
        );
        assert!(
            err.contains("redirection"),
            "the error must say what failed: {err}"
        );
        let status = c.agent_status("node-a");
        assert!(
            status["pods"][format!("apps/{name}")]["captured"].as_bool() != Some(true),
            "apps/{name} reported captured: {status}"
        );
    }
    // One broken transaction per new pod at least (the agent may retry a
    // pod once more before its sandbox is gone).
    let calls = faulty_calls(&dir);
    assert!(calls.len() >= 3, "{} broken transactions", calls.len());
    for (rc, before, after) in &calls {
        assert_ne!(*rc, 0);
        assert!(
            !before.contains("mesh-ambient"),
            "a new pod's namespace had rules:\n{before}"
        );
        assert_eq!(before, after, "a failed transaction changed the ruleset");
    }

    // The captured pod's table drifts; the repair is broken half-way (the
    // fault first, so that no repair can slip in before it).
    std::fs::write(dir.join("fail-after"), (rules / 2).to_string()).unwrap();
    let kept = c.get("apps", "kept").netns.clone();
    integration::cluster::host::ns_sh(
        &kept,
        "nft",
        &["flush", "chain", "inet", "mesh-ambient", "output-nat"],
    );
    let drifted = c.pod_rules(c.get("apps", "kept")).unwrap();
    let seen = calls.len();
    let repair = || {
        faulty_calls(&dir)
            .into_iter()
            .skip(seen)
            .find(|(_, before, _)| before.contains("mesh-ambient"))
    };
    c.wait_for("the agent tries to repair the rules", |_| {
        repair().is_some()
    });
    let (rc, before, after) = repair().unwrap();
    assert_ne!(rc, 0);
    assert!(
        before.contains("chain prerouting-nat"),
        "the earlier table:\n{before}"
    );
    assert_eq!(before, after, "a failed repair changed the ruleset");
    assert_eq!(c.pod_rules(c.get("apps", "kept")).unwrap(), drifted);

    // nft works again: the repair and a new pod get every rule.
    std::fs::remove_file(dir.join("fail-after")).unwrap();
    c.wait_for("the rules are repaired", |c| {
        c.pod_rules(c.get("apps", "kept")).as_deref() == Some(complete.as_str())
    });
    c.captured_pods("apps", &[("after", "node-a")]);
    assert_eq!(
        c.pod_rules(c.get("apps", "after")).as_deref(),
        Some(complete.as_str())
    );
}

/// A server that closes first (pod-echo's HTTP answers `connection: close`)
/// leaves ztunnel's side of the client's connection in TIME_WAIT for a
/// minute, while the client's side, which read to the end before closing,
/// is gone at once: the client may reuse its port for the same destination
/// straight away, as a busy client does. That SYN must be captured like any
/// other (in eBPF mode it was dropped on every retransmission).
#[test]
fn a_client_port_reused_while_ztunnels_side_is_in_time_wait_connects() {
    let c = two_node_mesh();
    let client = c.get("apps", "client");
    let remote = c.get("apps", "remote");
    c.curl_over_mtls(
        client,
        &format!("http://{}:{HTTP_PORT}/", remote.ip),
        remote,
    );
    let netns = mesh_netns::Netns::open(format!("/var/run/netns/{}", client.netns)).unwrap();
    let to = std::net::SocketAddr::from((remote.ip, HTTP_PORT));
    let from = std::net::SocketAddr::from((client.ip, 41017));
    let want = format!("hello from remote, you are {}\n", client.ip);
    for attempt in 1..=3 {
        let began = std::time::Instant::now();
        let reply = netns
            .run(|| http_get_from(from, to))
            .unwrap()
            .unwrap_or_else(|e| {
                let status = c.agent_status("node-a");
                panic!("request {attempt} from {from}: {e}; the agent: {status}")
            });
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with(&want),
            "request {attempt} from {from}: {reply}"
        );
        eprintln!("request {attempt} from {from} took {:?}", began.elapsed());
    }
    // In eBPF mode the programs counted the two reused ports (the agent
    // writes its status every few seconds).
    if c.redirect == Redirect::Ebpf {
        c.wait_for("the agent counted the TIME_WAIT sockets cleared", |c| {
            let status = c.agent_status("node-a");
            let counters = &status["redirection"]["ebpf"]["counters"];
            counters["timeWaitCleared"].as_u64().unwrap_or(0) >= 2
        });
    }
}

/// A GET from exactly `from` (the port bound first), read to the server's
/// end before closing, so this side leaves no TIME_WAIT behind.
fn http_get_from(from: std::net::SocketAddr, to: std::net::SocketAddr) -> std::io::Result<String> {
    use socket2::{Domain, SockAddr, Socket, Type};
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    // Our previous socket on this port may still wait for the ACK of its
    // FIN (LAST_ACK) for a moment: the tuple is ours until then.
    let began = std::time::Instant::now();
    let socket = loop {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(from))?;
        match socket.connect_timeout(&SockAddr::from(to), timeout) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && began.elapsed() < std::time::Duration::from_secs(2) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
            Ok(()) => break socket,
        }
    };
    let mut stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: remote\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}
