//! HTTP/2 and pool settings, with Istio's defaults.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct H2Config {
    /// `SETTINGS_INITIAL_WINDOW_SIZE` for every stream.
    pub stream_window: u32,
    /// The connection-level window; 4x the stream window so that one stalled
    /// stream cannot starve the others on the same connection.
    pub connection_window: u32,
    /// `SETTINGS_MAX_FRAME_SIZE`.
    pub max_frame_size: u32,
    /// Client side: the most streams one pooled connection carries.
    pub max_streams_per_connection: usize,
    /// Server side: the `SETTINGS_MAX_CONCURRENT_STREAMS` advertised.
    pub server_max_concurrent_streams: u32,
    pub client_max_header_list_size: u32,
    pub server_max_header_list_size: u32,
    pub server_max_send_buffer: usize,
    /// First PING after this much time, then every interval.
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long drops the connection.
    pub keepalive_timeout: Duration,
    /// A pooled connection unused for this long is released.
    pub pool_idle_timeout: Duration,
    /// TCP connect timeout for a new pooled connection.
    pub connect_timeout: Duration,
    /// TLS handshake timeout, both sides; on the server also the bound on
    /// the HTTP/2 preface after it.
    pub handshake_timeout: Duration,
}

impl Default for H2Config {
    fn default() -> Self {
        Self {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_streams_per_connection: 100,
            server_max_concurrent_streams: 200,
            client_max_header_list_size: 16 * 1024,
            server_max_header_list_size: 64 * 1024,
            server_max_send_buffer: 400 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            pool_idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
