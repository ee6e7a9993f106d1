//! The resources every proxy is sent, with content-derived versions: the
//! same resource always has the same version, across restarts too, so a
//! proxy reconnecting with `initial_resource_versions` is sent only what
//! actually changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::translate::Translation;

pub use mesh_model::waypoint::WAYPOINT_CONFIG_TYPE;
pub use mesh_proto::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

/// The type URLs this server answers, in the order proxies subscribe.
pub const SUPPORTED_TYPES: [&str; 3] = [ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE];

/// One encoded resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    pub version: String,
    pub body: prost_types::Any,
}

impl Versioned {
    fn encode(type_url: &str, message: &impl Message) -> Self {
        Self::with_body(type_url, message.encode_to_vec())
    }

    /// Our own types carry JSON (serialized from ordered maps, so the same
    /// configuration always gives the same bytes and version).
    fn encode_json(type_url: &str, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("waypoint configuration serializes");
        Self::with_body(type_url, body)
    }

    fn with_body(type_url: &str, value: Vec<u8>) -> Self {
        let digest = Sha256::digest(&value);
        Self {
            version: hex::encode(&digest[..8]),
            body: prost_types::Any {
                type_url: type_url.to_string(),
                value,
            },
        }
    }
}

pub type TypeResources = BTreeMap<String, Arc<Versioned>>;

/// Everything, by type URL then resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    /// Counts translations, for `system_version_info` and logs.
    pub generation: u64,
    pub by_type: BTreeMap<&'static str, TypeResources>,
    /// When the change this set answers was seen (convergence time).
    pub changed_at: Option<std::time::Instant>,
}

impl ResourceSet {
    pub fn new(translation: &Translation, generation: u64) -> Self {
        let mut by_type = BTreeMap::new();
        by_type.insert(
            ADDRESS_TYPE,
            translation
                .addresses
                .iter()
                .map(|(n, a)| (n.clone(), Arc::new(Versioned::encode(ADDRESS_TYPE, a))))
                .collect(),
        );
        by_type.insert(
            AUTHORIZATION_TYPE,
            translation
                .authorizations
                .iter()
                .map(|(n, a)| {
                    (
                        n.clone(),
                        Arc::new(Versioned::encode(AUTHORIZATION_TYPE, a)),
                    )
                })
                .collect(),
        );
        by_type.insert(
            WAYPOINT_CONFIG_TYPE,
            translation
                .waypoints
                .iter()
                .map(|(n, c)| {
                    (
                        n.clone(),
                        Arc::new(Versioned::encode_json(WAYPOINT_CONFIG_TYPE, c)),
                    )
                })
                .collect(),
        );
        Self {
            generation,
            by_type,
            changed_at: None,
        }
    }

    pub fn of_type(&self, type_url: &str) -> Option<&TypeResources> {
        self.by_type.get(type_url)
    }
}
