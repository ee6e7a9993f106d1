#!/usr/bin/env bash
# The mesh on a real Kubernetes cluster (kind): builds the images, loads
# them into a three-node kind cluster, installs with `ambientctl install`,
# deploys the sample apps and runs the scenarios of the local mesh's tour
# (docs/getting-started.md) with kubectl. Exits non-zero at the first
# scenario that misbehaves. Needs Docker, kind and kubectl; see README.md.
#
#   integration/kind/run.sh            # create, test, delete the cluster
#   KEEP=1 integration/kind/run.sh     # leave the cluster up afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/integration/kind"
CLUSTER=ambient
TAG=dev
HUB=ambient-mesh
GATEWAY_API=https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml
CTL="$ROOT/target/release/ambientctl"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\n✗ %s\n' "$*" >&2; exit 1; }
for tool in docker kind kubectl cargo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (see integration/kind/README.md)"
done

# Runs "$@" until it succeeds, for up to 60 s.
eventually() {
  local deadline=$((SECONDS + 60))
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 2
  done
}

cleanup() {
  if [[ "${KEEP:-}" != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -f "${KUBECONFIG_FILE:-}"
}
trap cleanup EXIT

step "Building the images and ambientctl"
for target in istiod-lite ztunnel waypoint cni sample; do
  docker build -q -f "$ROOT/deploy/docker/Dockerfile" --target "$target" -t "$HUB/$target:$TAG" "$ROOT" >/dev/null
done
(cd "$ROOT" && cargo build --release -q -p ambientctl)

step "Creating the kind cluster"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --config "$HERE/cluster.yaml" --wait 120s
for target in istiod-lite ztunnel waypoint cni sample; do
  kind load docker-image --name "$CLUSTER" "$HUB/$target:$TAG"
done
KUBECONFIG_FILE=$(mktemp)
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
export KUBECONFIG="$KUBECONFIG_FILE"

step "Installing: Gateway API CRDs, then the mesh"
kubectl apply -f "$GATEWAY_API"
"$CTL" --kubeconfig "$KUBECONFIG" install --set "hub=$HUB" --set "tag=$TAG"
kubectl -n istio-system rollout status deployment/istiod --timeout 180s
kubectl -n istio-system rollout status daemonset/istio-cni-node --timeout 180s
kubectl -n istio-system rollout status daemonset/ztunnel --timeout 180s

step "Deploying the sample apps"
sed "s|ambient-mesh/sample:0.1.0|$HUB/sample:$TAG|" "$ROOT/samples/demo.yaml" | kubectl apply -f -
kubectl -n demo wait --for=condition=Available deployment --all --timeout 180s

exec_in() { local from=$1; shift; kubectl -n demo exec "deploy/$from" -- "$@"; }
answer_from() { exec_in "$1" curl -s --max-time 5 "$2"; }

step "1. Enroll namespace demo"
kubectl label namespace demo istio.io/dataplane-mode=ambient --overwrite
reaches_web() { answer_from client http://web.demo/ | grep -q '^hello from web-v1'; }
eventually reaches_web || fail "the client does not reach web"

step "2. ztunnel lists the demo pods with protocol HBONE"
ZTUNNEL=$(kubectl -n istio-system get pods -l app=ztunnel -o jsonpath='{.items[0].metadata.name}')
kubectl -n istio-system port-forward "pod/$ZTUNNEL" 15000:15000 >/dev/null 2>&1 &
FORWARD=$!
trap 'kill $FORWARD 2>/dev/null || true; cleanup' EXIT
four_on_hbone() {
  [ "$("$CTL" zc workloads --admin 127.0.0.1:15000 --workload-namespace demo | grep -c 'HBONE *$')" -ge 4 ]
}
eventually four_on_hbone || fail "ztunnel does not list the 4 demo pods with HBONE"
"$CTL" zc workloads --admin 127.0.0.1:15000 --workload-namespace demo

step "3. L4 policy: only web may connect to db"
kubectl apply -f - <<YAML
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: demo}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/demo/sa/web-v1, cluster.local/ns/demo/sa/web-v2]
YAML
# Refused means curl's own reset exit codes (52, 56), not a failed exec.
refused() {
  local code=0
  kubectl -n demo exec deploy/client -- curl -s --max-time 5 http://db.demo/ >/dev/null || code=$?
  [[ $code == 52 || $code == 56 ]]
}
eventually refused || fail "the client still reaches db"
web_reaches_db() { answer_from web-v1 http://db.demo/ | grep -q '^hello from db'; }
eventually web_reaches_db || fail "web-v1 no longer reaches db"
condition_is() {
  [ "$(kubectl -n demo get authorizationpolicy "$1" -o jsonpath='{.status.conditions[0].type}={.status.conditions[0].status}')" = "$2" ]
}
eventually condition_is db-from-web ZtunnelAccepted=True || fail "db-from-web has no ZtunnelAccepted=True condition"

step "4. A waypoint for namespace demo"
"$CTL" waypoint generate -n demo | kubectl apply -f -
kubectl label namespace demo istio.io/use-waypoint=waypoint --overwrite
kubectl -n demo wait --for=condition=Programmed gateway/waypoint --timeout 180s
kubectl -n demo rollout status deployment/waypoint --timeout 180s
WAYPOINT_IP=$(kubectl -n demo get pods -l gateway.networking.k8s.io/gateway-name=waypoint -o jsonpath='{.items[0].status.podIP}')
through_waypoint() { answer_from client http://web.demo/ | grep -q "you are $WAYPOINT_IP\$"; }
eventually through_waypoint || fail "web is not reached through the waypoint ($WAYPOINT_IP)"

step "5. L7 policy: web allows GET only"
kubectl apply -f - <<YAML
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-get-only, namespace: demo}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET]}}]}]
YAML
post_denied() { [ "$(exec_in client curl -s --max-time 5 -X POST http://web.demo/)" = 'RBAC: access denied' ]; }
eventually post_denied || fail "POST is not denied by the waypoint"
eventually condition_is web-get-only WaypointAccepted=True || fail "web-get-only has no WaypointAccepted=True condition"

step "6. A 90/10 split with an HTTPRoute"
kubectl apply -f - <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-v1, port: 80, weight: 90}
    - {name: web-v2, port: 80, weight: 10}
YAML
split_ok() {
  local out v1 v2
  out=$(kubectl -n demo exec deploy/client -- curl -s --max-time 60 "http://web.demo/?[1-200]")
  v1=$(grep -c 'hello from web-v1' <<<"$out" || true)
  v2=$(grep -c 'hello from web-v2' <<<"$out" || true)
  echo "   web-v1 $v1, web-v2 $v2"
  (( v1 + v2 == 200 && v1 >= 160 && v1 <= 194 ))
}
eventually split_ok || fail "the 90/10 split did not show"

printf '\n✔ every scenario behaved on kind\n'
