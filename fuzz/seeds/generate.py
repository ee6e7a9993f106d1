#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/.

Run from anywhere: `python3 fuzz/seeds/generate.py`. The output is
committed; re-running rewrites the same bytes (CSRs aside: openssl makes a
fresh key each time, so those seeds are only written when missing).

Protobuf is encoded by hand below (the few wire types the messages use),
with field numbers from crates/proto/proto/*.proto; HTTP/2 frames and
HPACK likewise, from RFC 9113 and RFC 7541.
"""

import os
import struct
import subprocess
import sys
import tempfile

SEEDS = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf -------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def uint(field, n):
    """A varint field (uint32, enum, bool); zero is left out, as proto3 does."""
    return key(field, 0) + varint(n) if n else b""


def msg(field, body):
    """A length-delimited field: bytes, string or a nested message."""
    if isinstance(body, str):
        body = body.encode()
    return key(field, 2) + varint(len(body)) + body


def ip(text):
    if ":" in text:
        import ipaddress
        return ipaddress.IPv6Address(text).packed
    return bytes(int(p) for p in text.split("."))


# istio.workload.*
def port(service_port, target_port):
    return uint(1, service_port) + uint(2, target_port)


def workload(uid, name, ns, addresses, services=(), policies=(), node="node-a"):
    body = msg(20, uid) + msg(1, name) + msg(2, ns)
    for a in addresses:
        body += msg(3, ip(a))
    body += uint(5, 1)  # tunnel_protocol: HBONE
    body += msg(6, "cluster.local") + msg(7, "default") + msg(9, node)
    for svc_key, ports in services:
        port_list = b"".join(msg(1, port(*p)) for p in ports)
        body += msg(22, msg(1, svc_key) + msg(2, port_list))  # map entry
    for p in policies:
        body += msg(16, p)
    return body


def service(name, ns, hostname, vips, ports, waypoint=None):
    body = msg(1, name) + msg(2, ns) + msg(3, hostname)
    for v in vips:
        body += msg(4, msg(1, "") + msg(2, ip(v)))
    for p in ports:
        body += msg(5, port(*p))
    if waypoint:
        # GatewayAddress { hostname: NamespacedHostname, hbone_mtls_port }
        body += msg(7, msg(1, msg(1, waypoint[0]) + msg(2, waypoint[1])) + uint(3, 15008))
    return body


def address_of_workload(w):
    return msg(1, w)


def address_of_service(s):
    return msg(2, s)


# istio.security.*
def string_match(kind, value):
    return {"exact": msg(1, value), "prefix": msg(2, value), "suffix": msg(3, value),
            "presence": msg(4, b"")}[kind]


def cidr(text, length):
    return msg(1, ip(text)) + uint(2, length)


def authorization(name, ns, scope, action, matches):
    clause = b"".join(msg(2, m) for m in matches)
    rule = msg(1, clause)
    return msg(1, name) + msg(2, ns) + uint(3, scope) + uint(4, action) + msg(5, rule)


ADDRESS_TYPE = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE = "type.googleapis.com/istio.security.Authorization"


def resource(name, type_url, body, version="1"):
    any_ = msg(1, type_url) + msg(2, body)
    return msg(1, version) + msg(2, any_) + msg(3, name)


def delta_response(type_url, resources, removed=(), nonce="n1"):
    body = msg(1, "v1")
    for r in resources:
        body += msg(2, r)
    body += msg(4, type_url) + msg(5, nonce)
    for name in removed:
        body += msg(6, name)
    return body


def xds_seeds():
    web = workload(
        "Kubernetes//Pod/apps/web", "web", "apps", ["10.0.0.2"],
        services=[("apps/web.apps.svc.cluster.local", [(80, 8080)])],
        policies=["apps/allow-curl"],
    )
    db = workload("Kubernetes//Pod/apps/db", "db", "apps", ["10.0.0.3", "fd00::3"])
    web_svc = service("web", "apps", "web.apps.svc.cluster.local", ["10.96.0.10"],
                      [(80, 8080)], waypoint=("apps", "waypoint.apps.svc.cluster.local"))
    allow = authorization(
        "allow-curl", "apps", 2, 0,
        [msg(1, string_match("exact", "clients")),
         msg(3, string_match("prefix", "cluster.local/ns/clients/")),
         msg(5, cidr("10.1.0.0", 16)),
         msg(9, varint(8080))],  # destination_ports, packed
    )
    deny = authorization(
        "deny-admin", "istio-system", 0, 1,
        [msg(2, string_match("suffix", "-test")), msg(7, cidr("fd00::", 8)),
         msg(4, string_match("presence", ""))],
    )
    write("xds_decode", "address-workload", address_of_workload(web))
    write("xds_decode", "address-service", address_of_service(web_svc))
    write("xds_decode", "authorization", allow)
    write("xds_decode", "response-addresses", delta_response(ADDRESS_TYPE, [
        resource("Kubernetes//Pod/apps/web", ADDRESS_TYPE, address_of_workload(web)),
        resource("Kubernetes//Pod/apps/db", ADDRESS_TYPE, address_of_workload(db)),
        resource("apps/web.apps.svc.cluster.local", ADDRESS_TYPE, address_of_service(web_svc)),
    ], removed=["Kubernetes//Pod/apps/db", "apps/gone.apps.svc.cluster.local"]))
    write("xds_decode", "response-policies", delta_response(AUTHORIZATION_TYPE, [
        resource("apps/allow-curl", AUTHORIZATION_TYPE, allow),
        resource("istio-system/deny-admin", AUTHORIZATION_TYPE, deny),
    ], removed=["apps/old"]))


# --- ZDS --------------------------------------------------------------------

def zds_seeds():
    info = msg(1, "web") + msg(2, "apps") + msg(3, "web")
    add = msg(1, msg(1, "pod-uid-1") + msg(2, info))
    keep = msg(5, msg(1, "pod-uid-2"))
    delete = msg(2, msg(2, "pod-uid-3"))
    snapshot = msg(3, b"")
    ack_ok = msg(1, b"")
    ack_err = msg(1, msg(1, "cannot enter the namespace"))
    hello = uint(1, 1)

    def packets(*ps):
        return b"".join(struct.pack(">H", len(p)) + p for p in ps)

    write("zds", "snapshot", packets(keep, keep, snapshot, delete))
    write("zds", "add-without-fd", packets(add, keep, snapshot))
    write("zds", "second-snapshot", packets(snapshot, snapshot, keep))
    write("zds", "agent-side", packets(hello, ack_ok, ack_err))
    write("zds", "empty-and-long", packets(b"", b"\x0a" * 1030))


# --- HTTP/2 -----------------------------------------------------------------

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """HPACK literal without indexing, indexed name, no Huffman."""
    value = value.encode()
    assert index < 15 and len(value) < 127
    return bytes([index, len(value)]) + value


SETTINGS = frame(0x4, 0, 0)
END_STREAM, END_HEADERS = 0x1, 0x4


def connect(stream, authority, end_stream=False):
    block = literal(2, "CONNECT") + literal(1, authority)
    return frame(0x1, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)


def hbone_seeds():
    write("hbone_wire", "accepted", b"\x00" + SETTINGS + connect(1, "10.0.0.5:8080")
          + frame(0x0, 0, 1, b"hello") + frame(0x0, END_STREAM, 1, b""))
    write("hbone_wire", "rejected", b"\x00" + SETTINGS + connect(1, "10.0.0.6:8080")
          + connect(3, "echo.apps.svc.cluster.local:80") + connect(5, "10.0.0.5:15008"))
    get = (bytes([0x82, 0x86, 0x84]) + literal(1, "10.0.0.5:80"))
    write("hbone_wire", "not-connect", b"\x00" + SETTINGS + frame(0x1, END_HEADERS | END_STREAM, 1, get))
    write("hbone_wire", "control-frames", b"\x00" + SETTINGS
          + frame(0x4, 0x1, 0)  # SETTINGS ack
          + frame(0x6, 0, 0, b"12345678")  # PING
          + frame(0x8, 0, 0, struct.pack(">I", 65535))  # WINDOW_UPDATE
          + connect(1, "10.0.0.5:8080")
          + frame(0x3, 0, 1, struct.pack(">I", 8))  # RST_STREAM CANCEL
          + frame(0x7, 0, 0, struct.pack(">II", 1, 0)))  # GOAWAY
    write("hbone_wire", "graceful-shutdown", b"\x03" + SETTINGS + connect(1, "10.0.0.5:8080"))
    write("hbone_wire", "continuation", b"\x00" + SETTINGS
          + frame(0x1, 0, 1, literal(2, "CONNECT"))
          + frame(0x9, END_HEADERS, 1, literal(1, "[fd00::5]:8080")))

    connects = {
        "accepted": "CONNECT\n10.0.0.5:8080\n10.0.0.5",
        "accepted-v6": "CONNECT\n[fd00::5]:8080\nfd00::5",
        "other-ip": "CONNECT\n10.0.0.6:8080\n10.0.0.5",
        "mapped-v4": "CONNECT\n[::ffff:10.0.0.5]:8080\n10.0.0.5",
        "hostname": "CONNECT\necho.apps.svc.cluster.local:80\n10.0.0.5",
        "proxy-port": "CONNECT\n10.0.0.5:15008\n10.0.0.5",
        "get": "GET\n10.0.0.5:80\n10.0.0.5",
        "no-authority": "CONNECT",
        "from-authority": "CONNECT\n10.0.0.7:15001\n-",
    }
    for name, text in connects.items():
        write("hbone_connect", name, text)


# --- text formats -----------------------------------------------------------

def text_seeds():
    write("baggage", "istio", "k8s.cluster.name=Kubernetes,k8s.namespace.name=apps,"
          "k8s.deployment.name=web,service.name=web,service.version=v1,"
          "cloud.region=eu-west1,cloud.availability_zone=eu-west1-b")
    write("baggage", "properties", " k8s.pod.name = web-0 ;p=1, service.name=web;x , other=1,,=")
    write("baggage", "empty-values", "k8s.job.name=,service.version=,k8s.cronjob.name=nightly")

    write("forwarded", "ours", 'for="10.0.0.1:3456";host=echo.apps.svc.cluster.local')
    write("forwarded", "rfc7239", 'for=192.0.2.60;proto=http;by=203.0.113.43, '
          'for="[2001:db8:cafe::17]:4711";Host="example.com"')
    write("forwarded", "bare-host", "echo.apps.svc.cluster.local")

    prev = ('"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],'
            '"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0},'
            '{"address":"fd00::5/64"}],"dns":{}}')
    write("cni_config", "add", '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"mesh-cni",'
          '"agentSocket":"/var/run/mesh-cni/plugin.sock","manifestDir":"/etc/mesh",'
          '"excludedNamespaces":["kube-system","infra"],"logLevel":"debug",' + prev + '}')
    write("cni_config", "old-version", '{"cniVersion":"0.3.1","name":"k8s","type":"mesh-cni",'
          '"prevResult":{"ips":[{"version":"4","address":"10.244.1.6/24"}]}}')
    write("cni_config", "no-prev-result", '{"cniVersion":"0.4.0","runtimeConfig":{"portMappings":[]}}')
    # Known finding F2: a JSON array is accepted as a config, positionally.
    write("cni_config", "array-config", '["0.4.0","co","DD",8.3]')
    write("cni_config", "plugin-event", '{"command":"ADD","containerId":"c1","netns":"/var/run/netns/p1",'
          '"podName":"web","podNamespace":"apps","podUid":"u-1","ips":["10.244.1.5","fd00::5"]}')
    write("cni_config", "agent-reply", '{"error":{"message":"ztunnel is not connected"}}')


MANIFESTS = {
    "pods-and-policy.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps, labels: {app: web}}
spec: {nodeName: node-a, serviceAccountName: web}
status: {podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-curl, namespace: apps}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/clients/sa/curl], ipBlocks: [10.1.0.0/16]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
""",
    "waypoint.yaml": """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-v, value: "2"}]}]
    backendRefs: [{name: web-v1, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: apps}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  jwtRules: [{issuer: https://issuer.example, jwksUri: https://issuer.example/jwks}]
""",
    "endpoints.yaml": """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-manual, namespace: apps, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 15432}]
endpoints:
- addresses: [192.168.7.10]
  nodeName: node-b
- addresses: [10.0.0.3]
  targetRef: {kind: Pod, name: other}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
""",
    "manifest.json": '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "json", "namespace": "apps"},'
                     ' "status": {"podIP": "10.0.0.9"}}',
}


def manifest_seeds():
    for name, text in MANIFESTS.items():
        write("manifest_yaml", name, text)


# --- CSRs -------------------------------------------------------------------

def csr_seeds():
    d = os.path.join(SEEDS, "ca_csr")
    keys = {
        "ec-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        # A P-384 key signed with SHA-256, and a P-256 key with SHA-384:
        # both valid, and both reproduce the known rcgen finding.
        "ec-p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
        "ec-p256-sha384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha384"],
        "ed25519": ["-newkey", "ed25519"],
        "rsa-2048": ["-newkey", "rsa:2048"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in keys.items():
            if os.path.exists(os.path.join(d, name + ".der")):
                continue
            out = os.path.join(tmp, name)
            subprocess.run(
                ["openssl", "req", "-new", "-nodes", "-keyout", out + ".key", "-subj",
                 "/O=mesh", "-addext", "subjectAltName=URI:spiffe://evil/ns/x/sa/y",
                 "-outform", "DER", "-out", out + ".der"] + args,
                check=True, capture_output=True)
            der = open(out + ".der", "rb").read()
            # Even mode byte: the harness wraps the DER in PEM itself.
            write("ca_csr", name + ".der", b"\x00" + der)
            if name == "ec-p256":
                pem = subprocess.run(["openssl", "req", "-inform", "DER", "-in", out + ".der"],
                                     check=True, capture_output=True).stdout
                # Odd mode byte: the PEM text as a client sends it.
                write("ca_csr", name + ".pem", b"\x01" + pem)


def main():
    xds_seeds()
    zds_seeds()
    hbone_seeds()
    text_seeds()
    manifest_seeds()
    csr_seeds()
    print("seeds written under", SEEDS, file=sys.stderr)


if __name__ == "__main__":
    main()
