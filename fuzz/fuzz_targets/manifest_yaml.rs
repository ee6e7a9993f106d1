//! istiod-lite's manifest loader: one file's text (multi-document YAML or
//! JSON) through `mesh_model::manifests::parse_manifest` (the YAML reader,
//! then `parse_object`'s typing and validation per document), and the
//! objects that were accepted through the control plane's translation
//! (`istiod_lite::translate::translate`) into xDS resources.
//!
//! Properties:
//! - nesting beyond the YAML reader's limit is an error, never a stack
//!   overflow (the fuzzer would report the overflow as a crash);
//! - an accepted object has a valid Kubernetes name, and a namespace
//!   exactly when its kind is namespaced;
//! - translation is deterministic (proxies skip resources by version);
//! - every Address and Authorization the control plane produces converts
//!   to the data plane's domain types, i.e. istiod-lite never sends a
//!   resource its own ztunnel would NACK.
#![no_main]

use istiod_lite::translate::{TranslateConfig, translate};
use libfuzzer_sys::fuzz_target;
use mesh_model::manifests::{Document, parse_manifest};
use mesh_model::{Model, Parsed};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_manifest(text) else {
        return;
    };
    let mut objects = Vec::new();
    let mut previous = 0;
    for Document { number, parsed } in documents {
        assert!(number > previous, "documents are numbered in order from 1");
        previous = number;
        if let Ok(Parsed::Object(key, object)) = parsed {
            assert!(valid_name(&key.name), "accepted the name {:?}", key.name);
            assert_eq!(key.namespace.is_empty(), !key.kind.namespaced(), "{key}");
            objects.push((key, *object));
        }
    }
    let model = Model::from_objects(objects.iter().map(|(k, o)| (k, o)));
    let config = TranslateConfig::default();
    let translation = translate(&model, &config);
    assert_eq!(
        translation,
        translate(&model, &config),
        "translation is not deterministic"
    );
    for (name, address) in &translation.addresses {
        if let Err(e) = mesh_core::Address::try_from(address) {
            panic!("istiod-lite produced Address {name} that ztunnel refuses: {e}\n{address:?}");
        }
    }
    for (name, policy) in &translation.authorizations {
        if let Err(e) = mesh_core::Authorization::try_from(policy) {
            panic!(
                "istiod-lite produced Authorization {name} that ztunnel refuses: {e}\n{policy:?}"
            );
        }
    }
});

/// A DNS-1123 subdomain, what Kubernetes allows as an object name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}
