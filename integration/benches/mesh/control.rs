//! The control plane (P10, P11): istiod-lite's translation and push at
//! scale, the state a ztunnel holds for it, and how fast a policy change
//! reaches many ztunnels.
//!
//! - [`mesh`]: a synthetic cluster of N pods and N/10 Services, as
//!   manifests;
//! - [`scale`]: P10 in-process: translate, push to one delta-xDS client,
//!   apply into ztunnel's state;
//! - [`footprint`]: P10 with the release binaries: ztunnel's resident
//!   memory per workload, and istiod-lite's;
//! - [`propagation`]: P11, a policy file changed under 50 connected
//!   clients;
//! - [`client`]: the in-process xDS clients (ztunnel's own code) and
//!   runtimes both use.
//!
//! istiod-lite's side runs on the proxy CPU, the clients on the load CPU,
//! each on a one-worker runtime pinned there.

mod client;
mod footprint;
mod mesh;
mod propagation;
mod scale;

use crate::Only;
use crate::method::Plan;
use crate::report::Report;

pub fn run(plan: &Plan, only: &Only, report: &mut Report) {
    if only.any(&["P10"]) {
        scale::run(plan, report);
        footprint::run(plan, report);
    }
    if only.any(&["P11"]) {
        propagation::run(plan, report);
    }
}
