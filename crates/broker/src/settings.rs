//! Per-instance limits and timeouts.

use std::time::Duration;

use switchyard_codec::topic::parse_shared_subscription;

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
    /// announced to MQTT 5.0 clients as Receive Maximum. A 5.0 client that exceeds it is
    /// disconnected with 0x93 (Receive Maximum exceeded). MQTT 3.x has no Receive Maximum, so a
    /// 3.x client is bounded by its 65,535 packet ids instead. Default 128.
    pub receive_maximum: u16,
    /// Outbound window: how many QoS 1 and QoS 2 PUBLISH packets the server sends to one client
    /// before waiting for acknowledgements, used when the client announces no Receive Maximum
    /// (always for MQTT 3.x). Messages beyond the window wait in the session queue. Default 32.
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
    /// Topic Alias Maximum announced to MQTT 5.0 clients: how many topic aliases a client may
    /// set on one connection, numbered from 1. A PUBLISH with alias 0 or above it is closed
    /// with DISCONNECT 0x94. 0 turns inbound aliases off. Default 10.
    pub topic_alias_maximum: u16,
    /// Maximum number of topic aliases the server sets towards one MQTT 5.0 connection, within
    /// the Topic Alias Maximum the client announced. The least recently used alias is reused
    /// when all are taken. Each alias keeps a copy of its topic for the life of the connection. 0 turns
    /// outbound aliases off. Default 10.
    pub max_outbound_topic_aliases: u16,
    /// Maximum number of retained messages the instance keeps, one per topic. When the store is
    /// full, a retained message for a topic without one is delivered but not retained, and a
    /// warning is logged. Replacing or deleting a topic's retained message always works. Each message
    /// keeps its payload, up to `max_packet_size` bytes. Default 10,000.
    pub max_retained_messages: usize,
    /// Prefix of the Response Information sent in CONNACK to MQTT 5.0 clients that set Request
    /// Response Information to 1: the client receives `<prefix>/response/<clientId>` as the
    /// base of its response topics. The authenticator must still allow the client to subscribe
    /// there. `None` sends no Response Information. Default `None`.
    pub response_topic_prefix: Option<String>,
    /// Maximum length of a topic name or topic filter, in bytes, shared subscription prefix
    /// included. A longer PUBLISH topic is rejected like an unauthorized one, but with reason
    /// code 0x90 (Topic Name invalid), a longer will topic gets CONNACK 0x90, and a longer
    /// filter gets SUBACK 0x8F (Topic Filter invalid). Default 65,535 bytes, the protocol's
    /// maximum.
    pub max_topic_length: u16,
    /// Maximum number of levels (parts between `/`) in a topic name or topic filter, counted without a
    /// shared subscription's `$share/<group>/` prefix, and rejected like `max_topic_length`.
    /// Default 128 levels.
    pub max_topic_levels: u16,
    /// Maximum length of a client identifier, in bytes. A longer one gets CONNACK 0x85 (Client
    /// Identifier not valid), which MQTT 3.1.1 clients receive as return code 2. Default 128
    /// bytes; ApsaraMQ for MQTT allows 64 characters.
    pub max_client_id_length: u16,
    /// Whether MQTT 3.1 (protocol level 3) client identifiers follow the 3.1 specification:
    /// 1 to 23 characters, and CONNACK return code 2 (Identifier Rejected) otherwise, an empty
    /// one included, because 3.1 servers assign no ids. Default true. When false, a 3.1 client
    /// is treated like a 3.1.1 one: ids up to `max_client_id_length`, such as ApsaraMQ's
    /// `GroupId@@@DeviceId` ids of up to 64 characters, and an assigned id for an empty one
    /// with Clean Session 1.
    pub strict_mqtt31_client_ids: bool,
    /// Maximum number of subscriptions of one session, where a shared subscription counts as
    /// one. Replacing
    /// an existing subscription always works. A SUBSCRIBE beyond the limit gets SUBACK 0x97
    /// (Quota exceeded) for that filter, which MQTT 3.1.1 clients receive as 0x80. Default 100;
    /// ApsaraMQ for MQTT allows 30 topics per client.
    pub max_subscriptions_per_client: usize,
    /// Maximum number of live connections of the instance. A new connection beyond it gets CONNACK 0x97
    /// (Quota exceeded), which MQTT 3.1.1 clients receive as return code 3 (server
    /// unavailable). A connection that takes over a client id with a live connection is
    /// accepted anyway, because the old connection is about to close. 0 means no limit.
    /// Default 100,000 connections.
    pub max_connections: usize,
    /// Maximum number of new connections the instance accepts per second, with bursts of up to one second's
    /// worth. A CONNECT beyond it gets CONNACK 0x9F (Connection rate exceeded), which MQTT 3.1.1
    /// clients receive as return code 3. It counts every CONNECT, accepted or not, so failed
    /// logins count too. 0 means no limit. Default 1,000 connections per second.
    pub max_connection_rate: u32,
    /// Maximum number of PUBLISH packets one connection may send per second, with bursts of up to one
    /// second's worth. A client that sends faster is disconnected: MQTT 5.0 clients with
    /// DISCONNECT 0x96 (Message rate too high), which MQTT 5.0 allows only in DISCONNECT,
    /// and MQTT 3.x clients by closing the connection. 0 means no limit. Default 1,000
    /// messages per second.
    pub max_publish_rate: u32,
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
            topic_alias_maximum: 10,
            max_outbound_topic_aliases: 10,
            max_retained_messages: 10_000,
            response_topic_prefix: None,
            max_topic_length: u16::MAX,
            max_topic_levels: 128,
            max_client_id_length: 128,
            strict_mqtt31_client_ids: true,
            max_subscriptions_per_client: 100,
            max_connections: 100_000,
            max_connection_rate: 1_000,
            max_publish_rate: 1_000,
        }
    }

    /// Checks a topic name or topic filter against `max_topic_length` and `max_topic_levels`,
    /// returning what is wrong with it.
    pub(crate) fn check_topic(&self, topic: &str) -> Result<(), String> {
        if topic.len() > usize::from(self.max_topic_length) {
            return Err(format!(
                "is {} bytes long, more than the maximum of {}",
                topic.len(),
                self.max_topic_length
            ));
        }
        let filter = match parse_shared_subscription(topic) {
            Ok(Some(shared)) => shared.filter,
            _ => topic,
        };
        let levels = filter.split('/').count();
        if levels > usize::from(self.max_topic_levels) {
            return Err(format!(
                "has {levels} levels, more than the maximum of {}",
                self.max_topic_levels
            ));
        }
        Ok(())
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
        assert_eq!(settings.topic_alias_maximum, 10);
        assert_eq!(settings.max_outbound_topic_aliases, 10);
        assert_eq!(settings.max_retained_messages, 10_000);
        assert_eq!(settings.response_topic_prefix, None);
        assert_eq!(settings.max_topic_length, 65_535);
        assert_eq!(settings.max_topic_levels, 128);
        assert_eq!(settings.max_client_id_length, 128);
        assert!(settings.strict_mqtt31_client_ids);
        assert_eq!(settings.max_subscriptions_per_client, 100);
        assert_eq!(settings.max_connections, 100_000);
        assert_eq!(settings.max_connection_rate, 1_000);
        assert_eq!(settings.max_publish_rate, 1_000);
    }

    #[test]
    fn topic_limits_check_length_and_levels() {
        let mut settings = InstanceSettings::new("mqtt-cn-hz01");
        settings.max_topic_length = 10;
        settings.max_topic_levels = 3;
        assert_eq!(settings.check_topic("a/b/c"), Ok(()));
        assert!(settings.check_topic("a/b/c/d").is_err());
        assert!(settings.check_topic("abcdefghijk").is_err());
        assert_eq!(settings.check_topic("$share/g/a"), Ok(()));
        assert!(settings.check_topic("$share/g/a/b/c/d").is_err());
        assert!(
            settings.check_topic("$share/group/a").is_err(),
            "length counts the prefix"
        );
    }
}
