//! The data plane's side of xDS: the delta-ADS client ([`client`]) and the
//! state it feeds ([`state`]), shared by ztunnel and the waypoint.
#![forbid(unsafe_code)]

pub mod client;
pub mod state;

pub use client::{
    ADDRESS_TYPE, AUTHORIZATION_TYPE, Handler, NodeInfo, StateHandler, XdsClient, XdsClientStats,
    XdsConfig,
};
pub use state::ProxyState;
