use std::collections::{BTreeMap, HashMap};

use mesh_proto::istio::workload as wl;

use super::*;
use crate::address::Network;
use crate::identity::TrustDomain;
use crate::service::PortMapping;
use crate::workload::{TunnelProtocol, WorkloadTelemetry, WorkloadUid};

fn proto_workload() -> wl::Workload {
    wl::Workload {
        uid: "Kubernetes//Pod/default/echo".into(),
        name: "echo".into(),
        namespace: "default".into(),
        addresses: vec![
            vec![10, 0, 0, 3],
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
        ],
        network: "net-a".into(),
        tunnel_protocol: wl::TunnelProtocol::Hbone.into(),
        trust_domain: "example.org".into(),
        service_account: "echo".into(),
        node: "node-a".into(),
        authorization_policies: vec!["default/allow-sleep".into()],
        services: HashMap::from([(
            "default/echo.default.svc.cluster.local".into(),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: 80,
                    target_port: 8080,
                    app_protocol: wl::AppProtocol::Http11.into(),
                }],
            },
        )]),
        canonical_name: "echo".into(),
        ..Default::default()
    }
}

#[test]
fn workload_converts() {
    let w = Workload::try_from(&proto_workload()).unwrap();
    assert_eq!(
        w,
        Workload {
            uid: WorkloadUid::new("Kubernetes//Pod/default/echo"),
            name: "echo".into(),
            namespace: "default".into(),
            addresses: vec!["10.0.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
            network: Network::new("net-a"),
            tunnel_protocol: TunnelProtocol::Hbone,
            trust_domain: TrustDomain::new("example.org").unwrap(),
            service_account: "echo".into(),
            node: "node-a".into(),
            authorization_policies: vec!["default/allow-sleep".into()],
            services: BTreeMap::from([(
                "default/echo.default.svc.cluster.local".into(),
                vec![PortMapping {
                    service_port: 80,
                    target_port: 8080
                }]
            )]),
            waypoint: None,
            telemetry: WorkloadTelemetry {
                canonical_name: "echo".into(),
                ..Default::default()
            },
        }
    );
    assert_eq!(
        w.identity().unwrap().to_string(),
        "spiffe://example.org/ns/default/sa/echo"
    );
}

#[test]
fn workload_takes_istio_defaults() {
    let w = Workload::try_from(&wl::Workload {
        trust_domain: String::new(),
        service_account: String::new(),
        ..proto_workload()
    })
    .unwrap();
    assert_eq!(
        w.identity().unwrap().to_string(),
        "spiffe://cluster.local/ns/default/sa/default"
    );

    let plain = Workload::try_from(&wl::Workload {
        tunnel_protocol: wl::TunnelProtocol::None.into(),
        ..proto_workload()
    })
    .unwrap();
    assert_eq!(plain.tunnel_protocol, TunnelProtocol::None);
}

#[test]
fn workload_errors_name_the_field() {
    let err = |w: wl::Workload| Workload::try_from(&w).unwrap_err().to_string();
    let base = proto_workload;
    assert_eq!(
        err(wl::Workload {
            uid: String::new(),
            ..base()
        }),
        "uid: must not be empty"
    );
    assert_eq!(
        err(wl::Workload {
            addresses: vec![vec![10, 0, 0, 1], vec![0; 6]],
            ..base()
        }),
        "addresses[1]: address must be 4 or 16 bytes, got 6"
    );
    assert!(
        err(wl::Workload {
            tunnel_protocol: wl::TunnelProtocol::LegacyIstioMtls.into(),
            ..base()
        })
        .starts_with("tunnel_protocol: LEGACY_ISTIO_MTLS is not supported")
    );
    assert_eq!(
        err(wl::Workload {
            tunnel_protocol: 9,
            ..base()
        }),
        "tunnel_protocol: unknown value 9"
    );
    assert!(
        err(wl::Workload {
            trust_domain: "a/b".into(),
            ..base()
        })
        .starts_with("trust_domain: ")
    );
    assert!(
        err(wl::Workload {
            namespace: String::new(),
            ..base()
        })
        .starts_with("identity: namespace")
    );
    let mut bad_port = base();
    bad_port.services.insert(
        "default/other".into(),
        wl::PortList {
            ports: vec![wl::Port {
                service_port: 80,
                target_port: 70000,
                ..Default::default()
            }],
        },
    );
    assert_eq!(
        err(bad_port),
        r#"services["default/other"].ports[0].target_port: port 70000 is above 65535"#
    );
}

fn proto_service() -> wl::Service {
    wl::Service {
        name: "echo".into(),
        namespace: "default".into(),
        hostname: "echo.default.svc.cluster.local".into(),
        addresses: vec![
            wl::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 10],
                length: None,
            },
            wl::NetworkAddress {
                network: "net-b".into(),
                address: vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
                length: Some(128),
            },
        ],
        ports: vec![
            wl::Port {
                service_port: 80,
                target_port: 8080,
                ..Default::default()
            },
            wl::Port {
                service_port: 90,
                target_port: 0,
                ..Default::default()
            },
        ],
        subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/echo".into()],
        ..Default::default()
    }
}

#[test]
fn service_converts() {
    let s = Service::try_from(&proto_service()).unwrap();
    assert_eq!(
        s,
        Service {
            name: "echo".into(),
            namespace: "default".into(),
            hostname: "echo.default.svc.cluster.local".into(),
            vips: vec![
                "/10.96.0.10".parse().unwrap(),
                "net-b/fd00::a".parse().unwrap()
            ],
            ports: vec![
                PortMapping {
                    service_port: 80,
                    target_port: 8080
                },
                PortMapping {
                    service_port: 90,
                    target_port: 0
                },
            ],
            subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/echo".into()],
            waypoint: None,
        }
    );
    assert_eq!(s.key(), "default/echo.default.svc.cluster.local");
}

#[test]
fn service_errors_name_the_field() {
    let err = |s: wl::Service| Service::try_from(&s).unwrap_err().to_string();
    let mut s = proto_service();
    s.hostname.clear();
    assert_eq!(err(s), "hostname: must not be empty");
    let mut s = proto_service();
    s.addresses[1].address = vec![1, 2, 3];
    assert_eq!(
        err(s),
        "addresses[1].address: address must be 4 or 16 bytes, got 3"
    );
    let mut s = proto_service();
    s.addresses[0].length = Some(24);
    assert!(err(s).starts_with("addresses[0].length: CIDR VIPs (/24) are not supported"));
    let mut s = proto_service();
    s.ports[1].service_port = 1 << 16;
    assert_eq!(err(s), "ports[1].service_port: port 65536 is above 65535");
}

#[test]
fn address_is_a_workload_or_a_service() {
    use wl::address::Type;
    let w = wl::Address {
        r#type: Some(Type::Workload(proto_workload())),
    };
    assert!(matches!(Address::try_from(&w), Ok(Address::Workload(w)) if w.name == "echo"));
    let s = wl::Address {
        r#type: Some(Type::Service(proto_service())),
    };
    assert!(matches!(Address::try_from(&s), Ok(Address::Service(s)) if s.name == "echo"));

    let bad = wl::Address {
        r#type: Some(Type::Workload(wl::Workload::default())),
    };
    assert_eq!(
        Address::try_from(&bad).unwrap_err().to_string(),
        "workload.uid: must not be empty"
    );
    let bad = wl::Address {
        r#type: Some(Type::Service(wl::Service::default())),
    };
    assert_eq!(
        Address::try_from(&bad).unwrap_err().to_string(),
        "service.hostname: must not be empty"
    );
    assert_eq!(
        Address::try_from(&wl::Address { r#type: None })
            .unwrap_err()
            .field,
        "type"
    );
}

#[test]
fn waypoint_addresses_convert_and_errors_name_the_field() {
    let mut w = proto_workload();
    w.waypoint = Some(wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Hostname(
            wl::NamespacedHostname {
                namespace: "default".into(),
                hostname: "waypoint.default.svc.cluster.local".into(),
            },
        )),
        hbone_mtls_port: 15008,
    });
    let converted = Workload::try_from(&w).unwrap();
    assert_eq!(
        converted.waypoint.unwrap().to_string(),
        "default/waypoint.default.svc.cluster.local:15008"
    );
    w.waypoint.as_mut().unwrap().hbone_mtls_port = 0;
    let err = Workload::try_from(&w).unwrap_err().to_string();
    assert!(err.contains("waypoint.hbone_mtls_port"), "{err}");
    w.waypoint.as_mut().unwrap().destination = None;
    let err = Workload::try_from(&w).unwrap_err().to_string();
    assert!(err.contains("waypoint.destination"), "{err}");
}
