//! Per-instance limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of one [`Instance`](crate::Instance).
///
/// Build it with [`InstanceSettings::new`], which fills in the defaults documented on each field,
/// and change the fields that differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSettings {
    /// Instance id, such as `mqtt-cn-hz01`; it appears in every log line of the instance.
    pub id: String,
    /// Largest packet accepted from a client, in bytes, announced to MQTT 5.0 clients as Maximum
    /// Packet Size. Default 1 MiB.
    pub max_packet_size: u32,
    /// Inbound window: how many QoS 2 PUBLISH packets a client may have unreleased at once,
    /// announced to MQTT 5.0 clients as Receive Maximum. Default 128.
    pub receive_maximum: u16,
    /// Outbound window: how many QoS 1 and QoS 2 PUBLISH packets the server sends to one client
    /// before waiting for acknowledgements, used when the client announces no Receive Maximum
    /// (always for MQTT 3.x). Default 32.
    pub max_inflight: u16,
    /// Messages a session keeps that are not sent yet: waiting for the connection's writer or
    /// for room in the outbound window, or for an offline client to return (offline sessions
    /// keep only QoS 1 and QoS 2 messages). When the queue is full the oldest QoS 0 message is
    /// dropped, or else the oldest message, and the drop is counted and logged. Values below 1
    /// act as 1. Default 1000.
    pub max_queued_messages: usize,
    /// Time a region listener waits for the CONNECT packet of a new connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Maximum session expiry interval granted, in seconds. MQTT 5.0 clients that request more
    /// get this value back in CONNACK. MQTT 3.x persistent sessions (clean session 0) expire
    /// after this long offline. Default 259,200 s (3 days, the offline message retention of
    /// ApsaraMQ for MQTT).
    pub max_session_expiry: u32,
    /// Maximum keep-alive interval granted to MQTT 5.0 clients, in seconds. A client that
    /// requests more gets this value as Server Keep Alive. MQTT 3.x has no such property, so a
    /// 3.x client's own value is enforced, and a request for 0 (keep-alive off) is kept. 0
    /// here means no limit. Default 480 s (the keep-alive cap of ApsaraMQ for MQTT).
    pub max_keep_alive: u16,
}

impl InstanceSettings {
    /// Builds settings for instance `id` with the defaults documented on each field.
    pub fn new(id: impl Into<String>) -> InstanceSettings {
        InstanceSettings {
            id: id.into(),
            max_packet_size: 1024 * 1024,
            receive_maximum: 128,
            max_inflight: 32,
            max_queued_messages: 1000,
            connect_timeout: Duration::from_secs(10),
            max_session_expiry: 3 * 24 * 60 * 60,
            max_keep_alive: 480,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fills_documented_defaults() {
        let settings = InstanceSettings::new("mqtt-cn-hz01");
        assert_eq!(settings.id, "mqtt-cn-hz01");
        assert_eq!(settings.max_packet_size, 1_048_576);
        assert_eq!(settings.receive_maximum, 128);
        assert_eq!(settings.max_inflight, 32);
        assert_eq!(settings.max_queued_messages, 1000);
        assert_eq!(settings.connect_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_session_expiry, 259_200);
        assert_eq!(settings.max_keep_alive, 480);
    }
}
