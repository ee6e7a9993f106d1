//! Istio-wire-compatible protobuf messages and gRPC stubs for the mesh.
//!
//! The `.proto` files under `proto/` are this project's own text, but they
//! declare exactly the packages, message names, field numbers, types and enum
//! values of Istio's data-plane APIs (workload discovery, L4 authorization, the
//! CA, ZDS and the delta-xDS subset), so the bytes on the wire interoperate with
//! Istio's control plane, CNI agent and ztunnel.
//!
//! These generated types are a wire format only. They must not leak past the
//! conversion boundary in `mesh-core`: everything beyond that boundary works on
//! `mesh-core`'s own validated domain types.
//!
//! The module tree mirrors the protobuf packages, so prost's relative paths
//! between packages (`super::super::...`) resolve.

/// Encoded `google.protobuf.FileDescriptorSet` for every file in `proto/`
/// (including imported well-known types), e.g. for reflection or tests.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

/// The xDS type URLs of the resources the mesh exchanges, and the largest
/// xDS message either side accepts.
pub mod xds {
    pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
    pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";
    /// 200 MiB, as Istio: one message can carry a whole mesh.
    pub const MAX_MESSAGE_SIZE: usize = 200 * 1024 * 1024;
}

/// Packages under `istio.*`.
pub mod istio {
    /// `istio.workload`: workload and service discovery (`Address`).
    // prost generates the `address::Type` oneof with an unboxed `Workload`
    // variant that is much larger than `Service`. Boxing it would change the
    // generated API for every consumer; these values are short-lived and are
    // converted to domain types right away, so the size difference is harmless.
    #[allow(
        clippy::large_enum_variant,
        reason = "generated oneof `address::Type`; see comment above"
    )]
    pub mod workload {
        include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));

        /// `istio.workload.zds`: CNI node agent <-> node proxy messages.
        pub mod zds {
            include!(concat!(env!("OUT_DIR"), "/istio.workload.zds.rs"));
        }
    }

    /// `istio.security`: L4 authorization policies.
    pub mod security {
        include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
    }

    /// `istio.v1.*`.
    pub mod v1 {
        /// `istio.v1.auth`: the certificate signing service.
        pub mod auth {
            include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
        }
    }
}

/// Packages under `envoy.*` (only the subset the mesh uses).
pub mod envoy {
    /// `envoy.config.*`.
    pub mod config {
        /// `envoy.config.core.*`.
        pub mod core {
            /// `envoy.config.core.v3`: the xDS `Node`.
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }

    /// `envoy.service.*`.
    pub mod service {
        /// `envoy.service.discovery.*`.
        pub mod discovery {
            /// `envoy.service.discovery.v3`: delta aggregated discovery.
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
    }
}

/// Packages under `google.*` that are not prost well-known types.
pub mod google {
    /// `google.rpc`: the RPC error model.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
