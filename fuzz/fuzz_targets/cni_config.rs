//! The CNI plugin's stdin: `NetConf::parse`, then what the plugin reads of
//! it (`pod_ips`, `prev_result`, `pass_through`), and the lenient peeks
//! done before or after parsing fails (`peek_version`, `peek_log_level`).
//! Also the JSON line the node agent reads from the plugin (`PluginEvent`)
//! and the one the plugin reads back (`AgentReply`). Nothing here touches
//! the network or the filesystem.
//!
//! Properties: a config that parses has a supported version, and the peeks
//! agree with the parsed fields; `pod_ips` gives one address per `prevResult.ips` entry;
//! `pass_through` is `prevResult` with only `cniVersion` set to the
//! config's; the protocol messages survive a serialize → parse round trip.
#![no_main]

use cni_plugin::plugin::{NetConf, SUPPORTED_VERSIONS, peek_log_level, peek_version};
use cni_plugin::protocol::{AgentReply, PluginEvent};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|stdin: &[u8]| {
    let version = peek_version(stdin);
    let log_level = peek_log_level(stdin);
    if let Ok(conf) = NetConf::parse(stdin) {
        assert!(SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()));
        // Only a JSON object parses (F2, docs/fuzzing.md, fixed), so the
        // peeks always have fields to agree with.
        assert_eq!(version.as_deref(), Some(conf.cni_version.as_str()));
        assert_eq!(log_level, conf.log_level);
        let _ = conf.ensure_check_supported();
        check_prev_result(&conf);
    }

    if let Ok(event) = serde_json::from_slice::<PluginEvent>(stdin) {
        let line = serde_json::to_string(&event).expect("serializable");
        assert!(!line.contains('\n'), "the protocol is one JSON per line");
        assert_eq!(serde_json::from_str::<PluginEvent>(&line).ok(), Some(event));
    }
    if let Ok(reply) = serde_json::from_slice::<AgentReply>(stdin) {
        let line = serde_json::to_string(&reply).expect("serializable");
        assert!(!line.contains('\n'), "the protocol is one JSON per line");
        assert_eq!(serde_json::from_str::<AgentReply>(&line).ok(), Some(reply));
    }
});

fn check_prev_result(conf: &NetConf) {
    // (A `prevResult` that is a JSON array is read positionally by serde;
    // only objects are results a runtime writes.)
    if let (Ok(ips), Some(Value::Object(prev))) = (conf.pod_ips(), &conf.prev_result) {
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        assert_eq!(ips.len(), listed);
    }
    let Ok(prev) = conf.prev_result() else {
        assert!(conf.prev_result.is_none());
        assert!(conf.pass_through().is_err());
        return;
    };
    match conf.pass_through() {
        Ok(out) => {
            let Ok(Value::Object(mut out)) = serde_json::from_str::<Value>(&out) else {
                panic!("pass_through wrote something that is not a JSON object: {out}");
            };
            let version = out.remove("cniVersion");
            assert_eq!(version, Some(Value::from(conf.cni_version.as_str())));
            let mut expected = prev.as_object().expect("it passed through").clone();
            expected.remove("cniVersion");
            // Through the same write → read as `out`: serde_json, without
            // its `float_roundtrip` feature, may read its own output of a
            // huge number 1 ulp away (docs/fuzzing.md, observations).
            let expected: Value = serde_json::from_str(&Value::Object(expected).to_string())
                .expect("serde_json reads what it wrote");
            assert_eq!(
                Value::Object(out),
                expected,
                "pass_through changed more than cniVersion"
            );
        }
        Err(_) => assert!(!prev.is_object()),
    }
}
