//! Wire-compatibility checks for the generated protobuf code.
//!
//! The expected tables below are transcribed by hand from the wire contract
//! (`dataplane.md` §2.3, §3.6, §3.7, §4.2 and Appendix B). The descriptor test
//! proves that our `.proto` text declares exactly those numbers and types; the
//! encoding tests prove the numbering independently, by looking at raw bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_proto::FILE_DESCRIPTOR_SET;
use prost::Message as _;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorSet, ServiceDescriptorProto,
    field_descriptor_proto::{Label, Type},
};

/// How many values a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    /// A plain proto3 singular field (implicit presence, or a message).
    One,
    /// `repeated` (maps are checked through `Ty::Map`).
    Rep,
    /// A proto3 `optional` scalar (explicit presence, synthetic oneof).
    Opt,
}

/// The declared type of a field.
#[derive(Clone, Copy, Debug)]
enum Ty {
    /// A scalar, by its `.proto` spelling (`string`, `uint32`, ...).
    S(&'static str),
    /// A message, by fully qualified name.
    M(&'static str),
    /// An enum, by fully qualified name.
    E(&'static str),
    /// `map<key, value>`: key is a scalar; value is a scalar or, when it starts
    /// with `.`, a fully qualified message name.
    Map(&'static str, &'static str),
}

use Card::{One, Opt, Rep};
use Ty::{E, M, Map, S};

/// (message, field, number, cardinality, type, oneof)
type FieldRow = (
    &'static str,
    &'static str,
    i32,
    Card,
    Ty,
    Option<&'static str>,
);

#[rustfmt::skip]
const FIELDS: &[FieldRow] = &[
    // ---- §2.3 citadel.proto (istio.v1.auth) ----
    (".istio.v1.auth.IstioCertificateRequest", "csr", 1, One, S("string"), None),
    (".istio.v1.auth.IstioCertificateRequest", "validity_duration", 3, One, S("int64"), None),
    (".istio.v1.auth.IstioCertificateRequest", "metadata", 4, One, M(".google.protobuf.Struct"), None),
    (".istio.v1.auth.IstioCertificateResponse", "cert_chain", 1, Rep, S("string"), None),

    // ---- §3.6 workload.proto (istio.workload) ----
    (".istio.workload.Address", "workload", 1, One, M(".istio.workload.Workload"), Some("type")),
    (".istio.workload.Address", "service", 2, One, M(".istio.workload.Service"), Some("type")),

    (".istio.workload.Workload", "uid", 20, One, S("string"), None),
    (".istio.workload.Workload", "name", 1, One, S("string"), None),
    (".istio.workload.Workload", "namespace", 2, One, S("string"), None),
    (".istio.workload.Workload", "addresses", 3, Rep, S("bytes"), None),
    (".istio.workload.Workload", "hostname", 21, One, S("string"), None),
    (".istio.workload.Workload", "network", 4, One, S("string"), None),
    (".istio.workload.Workload", "tunnel_protocol", 5, One, E(".istio.workload.TunnelProtocol"), None),
    (".istio.workload.Workload", "trust_domain", 6, One, S("string"), None),
    (".istio.workload.Workload", "service_account", 7, One, S("string"), None),
    (".istio.workload.Workload", "waypoint", 8, One, M(".istio.workload.GatewayAddress"), None),
    (".istio.workload.Workload", "network_gateway", 19, One, M(".istio.workload.GatewayAddress"), None),
    (".istio.workload.Workload", "node", 9, One, S("string"), None),
    (".istio.workload.Workload", "canonical_name", 10, One, S("string"), None),
    (".istio.workload.Workload", "canonical_revision", 11, One, S("string"), None),
    (".istio.workload.Workload", "workload_type", 12, One, E(".istio.workload.WorkloadType"), None),
    (".istio.workload.Workload", "workload_name", 13, One, S("string"), None),
    (".istio.workload.Workload", "native_tunnel", 14, One, S("bool"), None),
    (".istio.workload.Workload", "application_tunnel", 23, One, M(".istio.workload.ApplicationTunnel"), None),
    (".istio.workload.Workload", "services", 22, Rep, Map("string", ".istio.workload.PortList"), None),
    (".istio.workload.Workload", "authorization_policies", 16, Rep, S("string"), None),
    (".istio.workload.Workload", "status", 17, One, E(".istio.workload.WorkloadStatus"), None),
    (".istio.workload.Workload", "cluster_id", 18, One, S("string"), None),
    (".istio.workload.Workload", "locality", 24, One, M(".istio.workload.Locality"), None),
    (".istio.workload.Workload", "network_mode", 25, One, E(".istio.workload.NetworkMode"), None),
    (".istio.workload.Workload", "extensions", 26, Rep, M(".istio.workload.Extension"), None),
    (".istio.workload.Workload", "capacity", 27, One, M(".google.protobuf.UInt32Value"), None),

    (".istio.workload.Service", "name", 1, One, S("string"), None),
    (".istio.workload.Service", "namespace", 2, One, S("string"), None),
    (".istio.workload.Service", "hostname", 3, One, S("string"), None),
    (".istio.workload.Service", "addresses", 4, Rep, M(".istio.workload.NetworkAddress"), None),
    (".istio.workload.Service", "ports", 5, Rep, M(".istio.workload.Port"), None),
    (".istio.workload.Service", "subject_alt_names", 6, Rep, S("string"), None),
    (".istio.workload.Service", "waypoint", 7, One, M(".istio.workload.GatewayAddress"), None),
    (".istio.workload.Service", "load_balancing", 8, One, M(".istio.workload.LoadBalancing"), None),
    (".istio.workload.Service", "ip_families", 9, One, E(".istio.workload.IPFamilies"), None),
    (".istio.workload.Service", "extensions", 10, Rep, M(".istio.workload.Extension"), None),
    (".istio.workload.Service", "canonical", 11, One, S("bool"), None),
    (".istio.workload.Service", "ingress_use_waypoint", 12, One, S("bool"), None),
    (".istio.workload.Service", "weighted_waypoints", 13, Rep, M(".istio.workload.WeightedWaypoint"), None),
    (".istio.workload.Service", "visibility", 14, One, E(".istio.workload.Service.Visibility"), None),

    (".istio.workload.NetworkAddress", "network", 1, One, S("string"), None),
    (".istio.workload.NetworkAddress", "address", 2, One, S("bytes"), None),
    (".istio.workload.NetworkAddress", "length", 3, Opt, S("uint32"), None),

    (".istio.workload.NamespacedHostname", "namespace", 1, One, S("string"), None),
    (".istio.workload.NamespacedHostname", "hostname", 2, One, S("string"), None),

    (".istio.workload.GatewayAddress", "hostname", 1, One, M(".istio.workload.NamespacedHostname"), Some("destination")),
    (".istio.workload.GatewayAddress", "address", 2, One, M(".istio.workload.NetworkAddress"), Some("destination")),
    (".istio.workload.GatewayAddress", "hbone_mtls_port", 3, One, S("uint32"), None),

    (".istio.workload.WeightedWaypoint", "destination", 1, One, M(".istio.workload.GatewayAddress"), None),
    (".istio.workload.WeightedWaypoint", "weight", 2, One, S("uint32"), None),

    (".istio.workload.PortList", "ports", 1, Rep, M(".istio.workload.Port"), None),

    (".istio.workload.Port", "service_port", 1, One, S("uint32"), None),
    (".istio.workload.Port", "target_port", 2, One, S("uint32"), None),
    (".istio.workload.Port", "app_protocol", 3, One, E(".istio.workload.AppProtocol"), None),

    (".istio.workload.LoadBalancing", "routing_preference", 1, Rep, E(".istio.workload.LoadBalancing.Scope"), None),
    (".istio.workload.LoadBalancing", "mode", 2, One, E(".istio.workload.LoadBalancing.Mode"), None),
    (".istio.workload.LoadBalancing", "health_policy", 3, One, E(".istio.workload.LoadBalancing.HealthPolicy"), None),

    (".istio.workload.Locality", "region", 1, One, S("string"), None),
    (".istio.workload.Locality", "zone", 2, One, S("string"), None),
    (".istio.workload.Locality", "subzone", 3, One, S("string"), None),

    (".istio.workload.ApplicationTunnel", "protocol", 1, One, E(".istio.workload.ApplicationTunnel.Protocol"), None),
    (".istio.workload.ApplicationTunnel", "port", 2, One, S("uint32"), None),

    (".istio.workload.Extension", "name", 1, One, S("string"), None),
    (".istio.workload.Extension", "config", 2, One, M(".google.protobuf.Any"), None),

    // ---- §3.7 authorization.proto (istio.security) ----
    (".istio.security.Authorization", "name", 1, One, S("string"), None),
    (".istio.security.Authorization", "namespace", 2, One, S("string"), None),
    (".istio.security.Authorization", "scope", 3, One, E(".istio.security.Scope"), None),
    (".istio.security.Authorization", "action", 4, One, E(".istio.security.Action"), None),
    (".istio.security.Authorization", "rules", 5, Rep, M(".istio.security.Rule"), None),
    (".istio.security.Authorization", "dry_run", 6, One, S("bool"), None),
    (".istio.security.Authorization", "extensions", 7, Rep, M(".istio.workload.Extension"), None),

    (".istio.security.Rule", "clauses", 1, Rep, M(".istio.security.Clause"), None),

    (".istio.security.Clause", "matches", 2, Rep, M(".istio.security.Match"), None),

    (".istio.security.Match", "namespaces", 1, Rep, M(".istio.security.StringMatch"), None),
    (".istio.security.Match", "not_namespaces", 2, Rep, M(".istio.security.StringMatch"), None),
    (".istio.security.Match", "principals", 3, Rep, M(".istio.security.StringMatch"), None),
    (".istio.security.Match", "not_principals", 4, Rep, M(".istio.security.StringMatch"), None),
    (".istio.security.Match", "source_ips", 5, Rep, M(".istio.security.Address"), None),
    (".istio.security.Match", "not_source_ips", 6, Rep, M(".istio.security.Address"), None),
    (".istio.security.Match", "destination_ips", 7, Rep, M(".istio.security.Address"), None),
    (".istio.security.Match", "not_destination_ips", 8, Rep, M(".istio.security.Address"), None),
    (".istio.security.Match", "destination_ports", 9, Rep, S("uint32"), None),
    (".istio.security.Match", "not_destination_ports", 10, Rep, S("uint32"), None),
    (".istio.security.Match", "service_accounts", 11, Rep, M(".istio.security.ServiceAccountMatch"), None),
    (".istio.security.Match", "not_service_accounts", 12, Rep, M(".istio.security.ServiceAccountMatch"), None),
    (".istio.security.Match", "extensions", 13, Rep, M(".istio.workload.Extension"), None),

    (".istio.security.Address", "address", 1, One, S("bytes"), None),
    (".istio.security.Address", "length", 2, One, S("uint32"), None),

    (".istio.security.ServiceAccountMatch", "namespace", 1, One, S("string"), None),
    (".istio.security.ServiceAccountMatch", "serviceAccount", 2, One, S("string"), None),

    (".istio.security.StringMatch", "exact", 1, One, S("string"), Some("match_type")),
    (".istio.security.StringMatch", "prefix", 2, One, S("string"), Some("match_type")),
    (".istio.security.StringMatch", "suffix", 3, One, S("string"), Some("match_type")),
    (".istio.security.StringMatch", "presence", 4, One, M(".google.protobuf.Empty"), Some("match_type")),

    // ---- §4.2 zds.proto (istio.workload.zds) ----
    (".istio.workload.zds.ZdsHello", "version", 1, One, E(".istio.workload.zds.Version"), None),

    (".istio.workload.zds.WorkloadInfo", "name", 1, One, S("string"), None),
    (".istio.workload.zds.WorkloadInfo", "namespace", 2, One, S("string"), None),
    (".istio.workload.zds.WorkloadInfo", "service_account", 3, One, S("string"), None),

    (".istio.workload.zds.AddWorkload", "uid", 1, One, S("string"), None),
    (".istio.workload.zds.AddWorkload", "workload_info", 2, One, M(".istio.workload.zds.WorkloadInfo"), None),

    (".istio.workload.zds.KeepWorkload", "uid", 1, One, S("string"), None),

    (".istio.workload.zds.DelWorkload", "uid", 2, One, S("string"), None),

    (".istio.workload.zds.Ack", "error", 1, One, S("string"), None),

    (".istio.workload.zds.WorkloadRequest", "add", 1, One, M(".istio.workload.zds.AddWorkload"), Some("payload")),
    (".istio.workload.zds.WorkloadRequest", "del", 2, One, M(".istio.workload.zds.DelWorkload"), Some("payload")),
    (".istio.workload.zds.WorkloadRequest", "snapshot_sent", 3, One, M(".istio.workload.zds.SnapshotSent"), Some("payload")),
    (".istio.workload.zds.WorkloadRequest", "keep", 5, One, M(".istio.workload.zds.KeepWorkload"), Some("payload")),

    (".istio.workload.zds.WorkloadResponse", "ack", 1, One, M(".istio.workload.zds.Ack"), Some("payload")),

    // ---- Appendix B: xDS subset ----
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "node", 1, One, M(".envoy.config.core.v3.Node"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "type_url", 2, One, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "resource_names_subscribe", 3, Rep, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "resource_names_unsubscribe", 4, Rep, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "initial_resource_versions", 5, Rep, Map("string", "string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "response_nonce", 6, One, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryRequest", "error_detail", 7, One, M(".google.rpc.Status"), None),

    (".envoy.service.discovery.v3.DeltaDiscoveryResponse", "system_version_info", 1, One, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryResponse", "resources", 2, Rep, M(".envoy.service.discovery.v3.Resource"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryResponse", "type_url", 4, One, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryResponse", "nonce", 5, One, S("string"), None),
    (".envoy.service.discovery.v3.DeltaDiscoveryResponse", "removed_resources", 6, Rep, S("string"), None),

    (".envoy.service.discovery.v3.Resource", "version", 1, One, S("string"), None),
    (".envoy.service.discovery.v3.Resource", "resource", 2, One, M(".google.protobuf.Any"), None),
    (".envoy.service.discovery.v3.Resource", "name", 3, One, S("string"), None),
    (".envoy.service.discovery.v3.Resource", "aliases", 4, Rep, S("string"), None),
    (".envoy.service.discovery.v3.Resource", "ttl", 6, One, M(".google.protobuf.Duration"), None),
    // The spec gives only the number; the type is Envoy's nested CacheControl.
    (".envoy.service.discovery.v3.Resource", "cache_control", 7, One, M(".envoy.service.discovery.v3.Resource.CacheControl"), None),
    (".envoy.service.discovery.v3.Resource.CacheControl", "do_not_cache", 1, One, S("bool"), None),

    (".envoy.config.core.v3.Node", "id", 1, One, S("string"), None),
    (".envoy.config.core.v3.Node", "cluster", 2, One, S("string"), None),
    (".envoy.config.core.v3.Node", "metadata", 3, One, M(".google.protobuf.Struct"), None),
    (".envoy.config.core.v3.Node", "build_version", 5, One, S("string"), None),

    (".google.rpc.Status", "code", 1, One, S("int32"), None),
    (".google.rpc.Status", "message", 2, One, S("string"), None),
    (".google.rpc.Status", "details", 3, Rep, M(".google.protobuf.Any"), None),
];

/// Messages in the spec that have no fields at all.
const EMPTY_MESSAGES: &[&str] = &[".istio.workload.zds.SnapshotSent"];

/// (message, field numbers that must be reserved)
const RESERVED: &[(&str, &[i32])] = &[
    (".istio.v1.auth.IstioCertificateRequest", &[2]),
    (".istio.workload.Workload", &[15]),
    (".istio.workload.GatewayAddress", &[4]),
    (".istio.security.Clause", &[1]),
    (".istio.workload.zds.WorkloadInfo", &[4]),
    (".istio.workload.zds.DelWorkload", &[1]),
];

/// (enum, [(value name, number)]) — must match exactly, no extra values.
#[rustfmt::skip]
const ENUMS: &[(&str, &[(&str, i32)])] = &[
    (".istio.workload.TunnelProtocol", &[("NONE", 0), ("HBONE", 1), ("LEGACY_ISTIO_MTLS", 2)]),
    (".istio.workload.WorkloadStatus", &[("HEALTHY", 0), ("UNHEALTHY", 1)]),
    (".istio.workload.WorkloadType", &[("DEPLOYMENT", 0), ("CRONJOB", 1), ("POD", 2), ("JOB", 3)]),
    (".istio.workload.NetworkMode", &[("STANDARD", 0), ("HOST_NETWORK", 1)]),
    (".istio.workload.IPFamilies", &[("AUTOMATIC", 0), ("IPV4_ONLY", 1), ("IPV6_ONLY", 2), ("DUAL", 3)]),
    (".istio.workload.AppProtocol", &[("UNKNOWN", 0), ("HTTP11", 1), ("HTTP2", 2), ("GRPC", 3), ("TCP", 4), ("TLS", 5)]),
    (".istio.workload.LoadBalancing.Scope", &[
        ("UNSPECIFIED_SCOPE", 0), ("REGION", 1), ("ZONE", 2), ("SUBZONE", 3),
        ("NODE", 4), ("CLUSTER", 5), ("NETWORK", 6),
    ]),
    (".istio.workload.LoadBalancing.Mode", &[("UNSPECIFIED_MODE", 0), ("STRICT", 1), ("FAILOVER", 2), ("PASSTHROUGH", 3)]),
    (".istio.workload.LoadBalancing.HealthPolicy", &[("ONLY_HEALTHY", 0), ("ALLOW_ALL", 1)]),
    (".istio.workload.ApplicationTunnel.Protocol", &[("NONE", 0), ("PROXY", 1)]),
    (".istio.workload.Service.Visibility", &[("PUBLIC", 0), ("NAMESPACE", 1)]),
    (".istio.security.Scope", &[("GLOBAL", 0), ("NAMESPACE", 1), ("WORKLOAD_SELECTOR", 2)]),
    (".istio.security.Action", &[("ALLOW", 0), ("DENY", 1)]),
    (".istio.workload.zds.Version", &[("NOT_USED", 0), ("V1", 1)]),
];

/// (service, method, input, output, client streaming, server streaming)
#[rustfmt::skip]
const METHODS: &[(&str, &str, &str, &str, bool, bool)] = &[
    (".istio.v1.auth.IstioCertificateService", "CreateCertificate",
        ".istio.v1.auth.IstioCertificateRequest", ".istio.v1.auth.IstioCertificateResponse", false, false),
    (".envoy.service.discovery.v3.AggregatedDiscoveryService", "DeltaAggregatedResources",
        ".envoy.service.discovery.v3.DeltaDiscoveryRequest", ".envoy.service.discovery.v3.DeltaDiscoveryResponse", true, true),
];

/// Every message, enum and service in the descriptor set, by full name.
struct Index {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
    services: HashMap<String, ServiceDescriptorProto>,
}

fn index_message(prefix: &str, msg: &DescriptorProto, idx: &mut Index) {
    let name = format!("{prefix}.{}", msg.name());
    for nested in &msg.nested_type {
        index_message(&name, nested, idx);
    }
    for e in &msg.enum_type {
        idx.enums.insert(format!("{name}.{}", e.name()), e.clone());
    }
    idx.messages.insert(name, msg.clone());
}

fn load_index() -> Index {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut idx = Index {
        messages: HashMap::new(),
        enums: HashMap::new(),
        services: HashMap::new(),
    };
    for file in &fds.file {
        let prefix = if file.package().is_empty() {
            String::new()
        } else {
            format!(".{}", file.package())
        };
        for msg in &file.message_type {
            index_message(&prefix, msg, &mut idx);
        }
        for e in &file.enum_type {
            idx.enums
                .insert(format!("{prefix}.{}", e.name()), e.clone());
        }
        for s in &file.service {
            idx.services
                .insert(format!("{prefix}.{}", s.name()), s.clone());
        }
    }
    idx
}

fn scalar_type(name: &str) -> Type {
    match name {
        "double" => Type::Double,
        "float" => Type::Float,
        "int64" => Type::Int64,
        "uint64" => Type::Uint64,
        "int32" => Type::Int32,
        "fixed64" => Type::Fixed64,
        "fixed32" => Type::Fixed32,
        "bool" => Type::Bool,
        "string" => Type::String,
        "bytes" => Type::Bytes,
        "uint32" => Type::Uint32,
        "sfixed32" => Type::Sfixed32,
        "sfixed64" => Type::Sfixed64,
        "sint32" => Type::Sint32,
        "sint64" => Type::Sint64,
        other => panic!("unknown scalar type in expected table: {other}"),
    }
}

/// Checks that a map entry field (`key` or `value`) has the expected type.
fn check_map_part(
    ctx: &str,
    entry: &DescriptorProto,
    part: &str,
    number: i32,
    want: &str,
    errors: &mut Vec<String>,
) {
    let Some(f) = entry.field.iter().find(|f| f.name() == part) else {
        errors.push(format!("{ctx}: map entry has no `{part}` field"));
        return;
    };
    if f.number() != number {
        errors.push(format!("{ctx}: map {part} has number {}", f.number()));
    }
    if want.starts_with('.') {
        if f.r#type() != Type::Message || f.type_name() != want {
            errors.push(format!(
                "{ctx}: map {part} is {:?} {}, want message {want}",
                f.r#type(),
                f.type_name()
            ));
        }
    } else if f.r#type() != scalar_type(want) {
        errors.push(format!(
            "{ctx}: map {part} is {:?}, want {want}",
            f.r#type()
        ));
    }
}

#[test]
fn messages_match_the_spec_tables() {
    let idx = load_index();
    let mut errors = Vec::new();

    // Group the expected rows by message.
    let mut expected: BTreeMap<&str, Vec<&FieldRow>> = BTreeMap::new();
    for row in FIELDS {
        expected.entry(row.0).or_default().push(row);
    }
    for name in EMPTY_MESSAGES {
        expected.entry(name).or_default();
    }

    for (msg_name, rows) in &expected {
        let Some(msg) = idx.messages.get(*msg_name) else {
            errors.push(format!("message {msg_name} is missing"));
            continue;
        };

        // No field beyond the spec's, and no number used twice in the table.
        let declared: BTreeSet<&str> = msg.field.iter().map(|f| f.name()).collect();
        let wanted: BTreeSet<&str> = rows.iter().map(|r| r.1).collect();
        for extra in declared.difference(&wanted) {
            errors.push(format!("{msg_name}: unexpected field `{extra}`"));
        }
        let numbers: BTreeSet<i32> = rows.iter().map(|r| r.2).collect();
        assert_eq!(
            numbers.len(),
            rows.len(),
            "{msg_name}: duplicate number in table"
        );

        for &&(_, field_name, number, card, ty, oneof) in rows {
            let ctx = format!("{msg_name}.{field_name}");
            let Some(f) = msg.field.iter().find(|f| f.name() == field_name) else {
                errors.push(format!("{ctx}: field is missing"));
                continue;
            };
            if f.number() != number {
                errors.push(format!("{ctx}: number {} != spec {number}", f.number()));
            }

            // Cardinality.
            let is_repeated = f.label() == Label::Repeated;
            let is_proto3_optional = f.proto3_optional();
            match card {
                Rep if !is_repeated => errors.push(format!("{ctx}: should be repeated")),
                One | Opt if is_repeated => {
                    errors.push(format!("{ctx}: should not be repeated"));
                }
                Opt if !is_proto3_optional => {
                    errors.push(format!("{ctx}: should be proto3 `optional`"));
                }
                One | Rep if is_proto3_optional => {
                    errors.push(format!("{ctx}: should not be proto3 `optional`"));
                }
                _ => {}
            }

            // Oneof membership (a proto3 `optional` sits in a synthetic oneof).
            let actual_oneof = f.oneof_index.filter(|_| !is_proto3_optional).map(|i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| msg.oneof_decl.get(i))
                    .map_or("<bad oneof index>", |o| o.name())
            });
            if actual_oneof != oneof {
                errors.push(format!("{ctx}: oneof {actual_oneof:?} != spec {oneof:?}"));
            }

            // Type.
            match ty {
                S(scalar) => {
                    if f.r#type() != scalar_type(scalar) {
                        errors.push(format!("{ctx}: type {:?} != spec {scalar}", f.r#type()));
                    }
                }
                M(type_name) | E(type_name) => {
                    let want_kind = if matches!(ty, M(_)) {
                        Type::Message
                    } else {
                        Type::Enum
                    };
                    if f.r#type() != want_kind || f.type_name() != type_name {
                        errors.push(format!(
                            "{ctx}: type {:?} {} != spec {want_kind:?} {type_name}",
                            f.r#type(),
                            f.type_name()
                        ));
                    }
                    let known = match want_kind {
                        Type::Message => idx.messages.contains_key(type_name),
                        _ => idx.enums.contains_key(type_name),
                    };
                    if !known {
                        errors.push(format!("{ctx}: type {type_name} is not defined"));
                    }
                }
                Map(key, value) => {
                    let entry = if f.r#type() == Type::Message {
                        idx.messages.get(f.type_name())
                    } else {
                        None
                    };
                    match entry {
                        Some(entry) if entry.options.as_ref().is_some_and(|o| o.map_entry()) => {
                            check_map_part(&ctx, entry, "key", 1, key, &mut errors);
                            check_map_part(&ctx, entry, "value", 2, value, &mut errors);
                        }
                        _ => errors.push(format!("{ctx}: should be a map field")),
                    }
                }
            }
        }
    }

    assert!(
        errors.is_empty(),
        "descriptor mismatches:\n{}",
        errors.join("\n")
    );
}

#[test]
fn reserved_numbers_are_reserved() {
    let idx = load_index();
    for (msg_name, numbers) in RESERVED {
        let msg = idx
            .messages
            .get(*msg_name)
            .unwrap_or_else(|| panic!("message {msg_name} is missing"));
        for n in *numbers {
            // Reserved ranges are [start, end) in descriptors.
            let reserved = msg
                .reserved_range
                .iter()
                .any(|r| r.start() <= *n && *n < r.end());
            assert!(reserved, "{msg_name}: field number {n} should be reserved");
            assert!(
                msg.field.iter().all(|f| f.number() != *n),
                "{msg_name}: field number {n} must not be used"
            );
        }
    }
}

#[test]
fn enums_match_the_spec_tables() {
    let idx = load_index();
    let mut errors = Vec::new();
    for (enum_name, values) in ENUMS {
        let Some(e) = idx.enums.get(*enum_name) else {
            errors.push(format!("enum {enum_name} is missing"));
            continue;
        };
        let actual: BTreeMap<&str, i32> = e.value.iter().map(|v| (v.name(), v.number())).collect();
        let wanted: BTreeMap<&str, i32> = values.iter().copied().collect();
        if actual != wanted {
            errors.push(format!("{enum_name}: {actual:?} != spec {wanted:?}"));
        }
    }
    assert!(errors.is_empty(), "enum mismatches:\n{}", errors.join("\n"));
}

#[test]
fn services_match_the_spec() {
    let idx = load_index();
    for &(svc, method, input, output, client_streaming, server_streaming) in METHODS {
        let s = idx
            .services
            .get(svc)
            .unwrap_or_else(|| panic!("service {svc} is missing"));
        let m = s
            .method
            .iter()
            .find(|m| m.name() == method)
            .unwrap_or_else(|| panic!("{svc}/{method} is missing"));
        assert_eq!(m.input_type(), input, "{svc}/{method} input");
        assert_eq!(m.output_type(), output, "{svc}/{method} output");
        assert_eq!(
            m.client_streaming(),
            client_streaming,
            "{svc}/{method} client streaming"
        );
        assert_eq!(
            m.server_streaming(),
            server_streaming,
            "{svc}/{method} server streaming"
        );
    }
}

#[test]
fn type_url_package_is_istio_workload() {
    // The xDS type URLs name these messages; the package is part of the contract.
    let idx = load_index();
    assert!(idx.messages.contains_key(".istio.workload.Address"));
    assert!(idx.messages.contains_key(".istio.security.Authorization"));
}

// ---------------------------------------------------------------------------
// Raw-byte checks: these do not use the descriptor at all.
// ---------------------------------------------------------------------------

mod bytes {
    use std::collections::HashMap;

    use mesh_proto::istio::{security, workload as wl, workload::zds};
    use prost::Message as _;

    #[test]
    fn workload_uid_is_field_20() {
        let addr = wl::Address {
            r#type: Some(wl::address::Type::Workload(wl::Workload {
                uid: "abc".to_owned(),
                ..Default::default()
            })),
        };
        // Address.workload: field 1, LEN → 0x0a, length 6.
        // Workload.uid: field 20, LEN → (20 << 3) | 2 = 162 → varint 0xa2 0x01.
        assert_eq!(
            addr.encode_to_vec(),
            [0x0a, 0x06, 0xa2, 0x01, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn address_round_trip_and_field_bytes() {
        let mut services = HashMap::new();
        services.insert(
            "default/echo.default.svc.cluster.local".to_owned(),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: 80,
                    target_port: 8080,
                    app_protocol: wl::AppProtocol::Http11.into(),
                }],
            },
        );
        let workload = wl::Workload {
            uid: "Kubernetes//Pod/default/echo-1".to_owned(),
            name: "echo-1".to_owned(),
            namespace: "default".to_owned(),
            addresses: vec![vec![10, 0, 0, 1]],
            tunnel_protocol: wl::TunnelProtocol::Hbone.into(),
            service_account: "echo".to_owned(),
            node: "node-a".to_owned(),
            services,
            network_mode: wl::NetworkMode::HostNetwork.into(),
            capacity: Some(5),
            ..Default::default()
        };
        let addr = wl::Address {
            r#type: Some(wl::address::Type::Workload(workload.clone())),
        };

        let encoded = addr.encode_to_vec();
        let decoded = wl::Address::decode(encoded.as_slice()).expect("decodes");
        assert_eq!(decoded, addr);

        // The outer frame is Address.workload (field 1, LEN).
        assert_eq!(encoded[0], 0x0a);
        let inner = workload.encode_to_vec();
        assert!(encoded.ends_with(&inner));

        let contains = |needle: &[u8]| inner.windows(needle.len()).any(|w| w == needle);
        // addresses: field 3, LEN.
        assert!(contains(&[0x1a, 0x04, 10, 0, 0, 1]), "addresses");
        // tunnel_protocol: field 5, VARINT, HBONE = 1.
        assert!(contains(&[0x28, 0x01]), "tunnel_protocol");
        // node: field 9, LEN.
        assert!(
            contains(&[0x4a, 0x06, b'n', b'o', b'd', b'e', b'-', b'a']),
            "node"
        );
        // network_mode: field 25 VARINT → 200 → 0xc8 0x01, HOST_NETWORK = 1.
        assert!(contains(&[0xc8, 0x01, 0x01]), "network_mode");
        // capacity: field 27 LEN → 218 → 0xda 0x01; UInt32Value{value: 5}.
        assert!(contains(&[0xda, 0x01, 0x02, 0x08, 0x05]), "capacity");
        // services map entry: field 22 LEN → 178 → 0xb2 0x01.
        assert!(contains(&[0xb2, 0x01]), "services");
    }

    #[test]
    fn single_field_encodings() {
        // Workload.uid alone, outside of Address.
        let w = wl::Workload {
            uid: "x".to_owned(),
            ..Default::default()
        };
        assert_eq!(w.encode_to_vec(), [0xa2, 0x01, 0x01, b'x']);

        // Service.visibility: field 14 VARINT → 0x70; NAMESPACE = 1.
        let s = wl::Service {
            visibility: wl::service::Visibility::Namespace.into(),
            ..Default::default()
        };
        assert_eq!(s.encode_to_vec(), [0x70, 0x01]);

        // NetworkAddress.length is proto3 `optional`: 0 is still encoded.
        let n = wl::NetworkAddress {
            length: Some(0),
            ..Default::default()
        };
        assert_eq!(n.encode_to_vec(), [0x18, 0x00]);
        assert_eq!(
            wl::NetworkAddress::default().encode_to_vec(),
            Vec::<u8>::new()
        );

        // GatewayAddress.hbone_mtls_port: field 3 VARINT, 15008 = 0xa0 0x75.
        let g = wl::GatewayAddress {
            hbone_mtls_port: 15008,
            ..Default::default()
        };
        assert_eq!(g.encode_to_vec(), [0x18, 0xa0, 0x75]);

        // ZDS DelWorkload.uid is field 2.
        let d = zds::DelWorkload {
            uid: "p".to_owned(),
        };
        assert_eq!(d.encode_to_vec(), [0x12, 0x01, b'p']);

        // ZDS WorkloadRequest.keep is field 5 (oneof payload).
        let r = zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Keep(zds::KeepWorkload {
                uid: "p".to_owned(),
            })),
        };
        assert_eq!(r.encode_to_vec(), [0x2a, 0x03, 0x0a, 0x01, b'p']);

        // ZdsHello{version: V1}.
        let h = zds::ZdsHello {
            version: zds::Version::V1.into(),
        };
        assert_eq!(h.encode_to_vec(), [0x08, 0x01]);

        // Authorization: Clause.matches is field 2.
        let c = security::Clause {
            matches: vec![security::Match::default()],
        };
        assert_eq!(c.encode_to_vec(), [0x12, 0x00]);
    }

    #[test]
    fn decode_hand_written_bytes() {
        // Address{service: Service{hostname: "h", visibility: NAMESPACE}}.
        let raw = [0x12, 0x05, 0x1a, 0x01, b'h', 0x70, 0x01];
        let addr = wl::Address::decode(raw.as_slice()).expect("decodes");
        let Some(wl::address::Type::Service(svc)) = addr.r#type else {
            panic!("expected a service, got {addr:?}");
        };
        assert_eq!(svc.hostname, "h");
        assert_eq!(svc.visibility(), wl::service::Visibility::Namespace);
    }
}
