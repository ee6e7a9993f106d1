//! Where the model comes from. Every source publishes whole [`Model`]
//! snapshots on a watch channel; the translation does not know which source
//! it is reading.
//!
//! [`Model`]: crate::model::Model

pub mod manifests;

pub use manifests::{ManifestDir, ManifestError};
