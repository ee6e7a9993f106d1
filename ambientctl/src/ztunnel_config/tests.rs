use super::*;

fn dump() -> Value {
    read_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/config_dump.json"
    ))
    .unwrap()
}

#[test]
fn workloads_show_istioctl_columns_with_protocol_and_waypoint() {
    let out = render(
        &dump(),
        Section::Workloads,
        Output::Short,
        &Filter::default(),
    );
    assert_eq!(
        out,
        "NAMESPACE  POD NAME  ADDRESS    NODE    WAYPOINT  PROTOCOL
shop       client    10.10.1.2  node-a  None      HBONE
shop       web       10.10.2.2  node-b  waypoint  HBONE
legacy     db        10.10.2.3  node-b  None      TCP
"
    );
    let only = Filter {
        namespace: Some("legacy".into()),
        ..Default::default()
    };
    let out = render(&dump(), Section::Workloads, Output::Short, &only);
    assert_eq!(out.lines().count(), 2, "{out}");
    let by_node = Filter {
        node: Some("node-a".into()),
        ..Default::default()
    };
    assert!(!render(&dump(), Section::Workloads, Output::Short, &by_node).contains("web"));
}

#[test]
fn services_policies_and_certificates() {
    let f = Filter::default();
    assert_eq!(
        render(&dump(), Section::Services, Output::Short, &f),
        "NAMESPACE  SERVICE NAME  SERVICE VIP  WAYPOINT  ENDPOINTS\nshop       web           10.96.0.10   waypoint  1/1\n"
    );
    assert_eq!(
        render(&dump(), Section::Policies, Output::Short, &f),
        "NAMESPACE  POLICY NAME  ACTION  SCOPE\nshop       deny-legacy  Deny    Namespace\n"
    );
    let certs = render(&dump(), Section::Certificates, Output::Short, &f);
    let lines: Vec<&str> = certs.lines().collect();
    let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[1]),
        [
            "spiffe://cluster.local/ns/shop/sa/client",
            "Leaf",
            "Available",
            "true",
            "1a2b",
            "2999-01-01T00:00:00Z",
            "2020-01-01T00:00:00Z"
        ]
    );
    assert_eq!(
        cells(lines[2])[1..4],
        ["Root", "Available", "false"],
        "expired root: {certs}"
    );
    assert_eq!(
        cells(lines[3])[1..4],
        ["Leaf", "Initializing", "false"],
        "{certs}"
    );
}

#[test]
fn json_and_yaml_print_the_section() {
    let f = Filter::default();
    let json: Value =
        serde_json::from_str(&render(&dump(), Section::Policies, Output::Json, &f)).unwrap();
    assert_eq!(json[0]["name"], "deny-legacy");
    let yaml = render(&dump(), Section::Services, Output::Yaml, &f);
    let back: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back[0]["hostname"], "web.shop.svc.cluster.local");
    let all = render(&dump(), Section::All, Output::Short, &f);
    for header in ["POD NAME", "SERVICE VIP", "POLICY NAME", "CERTIFICATE NAME"] {
        assert!(all.contains(header), "{all}");
    }
}

#[test]
fn an_unreachable_admin_endpoint_says_what_to_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = fetch(&format!("127.0.0.1:{port}")).unwrap_err().to_string();
    assert!(e.contains("cannot reach the ztunnel admin endpoint"), "{e}");
}

#[test]
fn connections_group_by_peer_unless_raw() {
    let out = render(
        &dump(),
        Section::Connections,
        Output::Short,
        &Filter::default(),
    );
    assert_eq!(
        out,
        "WORKLOAD    DIRECTION LOCAL          REMOTE            REMOTE TARGET     PROTOCOL
client.shop Outbound  10.10.1.2      10.10.3.9:15008   10.96.0.10:80     HBONE
client.shop Outbound  10.10.1.2      93.184.216.34:443 93.184.216.34:443 TCP
db.legacy   Inbound   10.10.2.3:5432 10.10.1.2                           TCP
"
    );
    let raw = Filter {
        raw: true,
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    let out = render(&dump(), Section::Connections, Output::Short, &raw);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("10.10.1.2:40002"), "{out}");
    assert!(!out.contains("db.legacy"), "{out}");
    let legacy = Filter {
        namespace: Some("legacy".into()),
        ..Default::default()
    };
    let json = render(&dump(), Section::Connections, Output::Json, &legacy);
    let rows: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["remote"], "10.10.1.2");
}
