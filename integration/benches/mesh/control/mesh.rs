//! A synthetic cluster shaped like a large real one, written as the
//! manifests istiod-lite reads: namespaces of 1000 pods enrolled in ambient
//! mode, 100 Services per namespace each selecting 10 pods that share a
//! service account, 100 pods per node.

use std::fmt::Write as _;
use std::path::Path;

use istiod_lite::model::Model;
use istiod_lite::source::ManifestDir;

/// Pods per namespace.
const PODS_PER_NAMESPACE: usize = 1000;
/// Pods behind each Service (and per service account).
const PODS_PER_SERVICE: usize = 10;
/// Pods per node.
const PODS_PER_NODE: usize = 100;

/// How big a cluster.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub workloads: usize,
}

impl Size {
    pub const fn new(workloads: usize) -> Self {
        Self { workloads }
    }

    pub fn services(&self) -> usize {
        self.workloads / PODS_PER_SERVICE
    }

    /// `10k`, `100k`: for figure names.
    pub fn label(&self) -> String {
        if self.workloads >= 1000 && self.workloads.is_multiple_of(1000) {
            format!("{}k", self.workloads / 1000)
        } else {
            self.workloads.to_string()
        }
    }
}

/// The manifests of a cluster of `size`, as one multi-document YAML text.
pub fn manifests(size: Size) -> String {
    let mut out = String::with_capacity(size.workloads * 300);
    let namespaces = size.workloads.div_ceil(PODS_PER_NAMESPACE);
    for n in 0..namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{istio.io/dataplane-mode: ambient}}}}\n"
        );
    }
    for s in 0..size.services() {
        let ns = s * PODS_PER_SERVICE / PODS_PER_NAMESPACE;
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\nspec: {{clusterIP: {}, selector: {{app: svc-{s}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
            ip(96 << 16, s)
        );
    }
    for p in 0..size.workloads {
        let s = p / PODS_PER_SERVICE;
        let ns = p / PODS_PER_NAMESPACE;
        let node = p / PODS_PER_NODE;
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: ns-{ns}, labels: {{app: svc-{s}, version: v1}}, ownerReferences: [{{kind: ReplicaSet, name: svc-{s}-5d4f8}}]}}\nspec: {{nodeName: node-{node}, serviceAccountName: sa-{s}}}\nstatus: {{phase: Running, podIP: {}}}\n",
            ip(1 << 16, p)
        );
    }
    out
}

/// `10.0.0.0 + base + i` as text.
fn ip(base: usize, i: usize) -> String {
    let n = base + i;
    assert!(n < 1 << 24, "the synthetic cluster outgrew 10.0.0.0/8");
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Writes the manifests of `size` into `dir` (as `mesh.yaml`).
pub fn write(dir: &Path, size: Size) {
    std::fs::create_dir_all(dir).expect("manifest directory");
    std::fs::write(dir.join("mesh.yaml"), manifests(size)).expect("write manifests");
}

/// Reads `dir` as istiod-lite does, and checks that every object parsed.
pub fn read(dir: &Path, size: Size) -> Model {
    let mut source = ManifestDir::new(dir);
    let report = source.scan().expect("manifest directory reads");
    assert!(
        report.errors.is_empty(),
        "the synthetic manifests do not parse: {}",
        report.errors[0]
    );
    let model = source.model();
    assert_eq!(model.pods.len(), size.workloads, "pods in the model");
    assert_eq!(
        model.services.len(),
        size.services(),
        "services in the model"
    );
    model
}
