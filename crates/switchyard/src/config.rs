//! The configuration file: TOML, every key named in the product documentation, unknown keys
//! rejected with the key's name, and cross-references checked before anything starts.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_auth::{MAX_CLIENT_ID_LEN, MAX_GROUP_ID_LEN, MIN_GROUP_ID_LEN, check_group_id};
use switchyard_dr::Edition;
use switchyard_store::{Durability, MessageStoreSettings};
use switchyard_transport::Transport;

mod access_rules;

pub use access_rules::AccessRuleConfig;

/// A whole deployment, as read from `switchyard serve --config FILE`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the embedded store; relative paths are relative to the configuration file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    #[serde(default)]
    pub disaster_recovery_groups: Vec<GroupConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("switchyard-data")
}

/// The management API listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Requests per second allowed per AccessKey before `Throttling.User`.
    #[serde(default = "default_throttle_rate")]
    pub throttle_rate_per_second: u32,
    /// Requests an AccessKey may send in one burst above the rate.
    #[serde(default = "default_throttle_burst")]
    pub throttle_burst: u32,
    /// Connections served at once. Further clients wait in the listen backlog until one closes.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a complete request head, in milliseconds.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time from a complete request head to the response, body included, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Time a kept-alive connection may wait for its next request, in milliseconds.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Signature nonces remembered at once, over all AccessKeys, for replay protection.
    #[serde(default = "default_nonce_cache_capacity")]
    pub nonce_cache_capacity: usize,
}

fn default_throttle_rate() -> u32 {
    100
}

fn default_throttle_burst() -> u32 {
    200
}

// The API defaults below equal those of `switchyard_api::ApiSettings`, which the test
// `api_defaults_match_api_settings` checks.

fn default_api_max_connections() -> usize {
    1024
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_nonce_cache_capacity() -> usize {
    200_000
}

/// The embedded SQLite store and the message store of persistent sessions.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a write waits for a locked database before it fails, in milliseconds.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// When a write to the message store counts as durable, and so when a QoS 1 or 2 publish
    /// to a persistent session is acknowledged.
    #[serde(default)]
    pub durability: DurabilityConfig,
    /// With `group_commit`: the longest time, in milliseconds, that the first write of a
    /// commit waits for more writes to share its fsync.
    #[serde(default = "default_group_commit_max_delay_ms")]
    pub group_commit_max_delay_ms: u64,
    /// With `group_commit`: the maximum number of write batches in one commit (at least 1).
    #[serde(default = "default_group_commit_max_batch")]
    pub group_commit_max_batch: usize,
    /// The maximum number of QoS 1 and 2 messages the message store keeps queued for one
    /// session. It must be at least every instance's `max_queued_messages`, which drops a
    /// session's oldest message first, so it only catches queues that outgrew a lowered limit.
    #[serde(default = "default_max_queued_messages_per_session")]
    pub max_queued_messages_per_session: u64,
    /// The maximum number of bytes of message store records of one instance: sessions, queued
    /// and inflight messages, wills and retained messages.
    #[serde(default = "default_max_instance_bytes")]
    pub max_instance_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            busy_timeout_ms: default_busy_timeout_ms(),
            durability: DurabilityConfig::default(),
            group_commit_max_delay_ms: default_group_commit_max_delay_ms(),
            group_commit_max_batch: default_group_commit_max_batch(),
            max_queued_messages_per_session: default_max_queued_messages_per_session(),
            max_instance_bytes: default_max_instance_bytes(),
        }
    }
}

impl StoreConfig {
    /// Returns the settings of the message store, or an error naming the invalid key.
    pub fn message_store_settings(&self) -> Result<MessageStoreSettings, String> {
        Ok(MessageStoreSettings {
            durability: self.message_durability()?,
            max_queued_messages_per_session: self.max_queued_messages_per_session,
            max_instance_bytes: self.max_instance_bytes,
            ..MessageStoreSettings::default()
        })
    }

    /// Returns the message store's durability policy, or an error naming the invalid key.
    pub fn message_durability(&self) -> Result<Durability, String> {
        match self.durability {
            DurabilityConfig::PerMessage => Ok(Durability::PerMessage),
            DurabilityConfig::Memory => Ok(Durability::Memory),
            DurabilityConfig::GroupCommit => {
                if self.group_commit_max_batch == 0 {
                    return Err("store.group_commit_max_batch is 0; set it to 1 or more".to_owned());
                }
                Ok(Durability::GroupCommit {
                    max_delay: Duration::from_millis(self.group_commit_max_delay_ms),
                    max_batch: self.group_commit_max_batch,
                })
            }
        }
    }
}

/// The `store.durability` key: when a message store write counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityConfig {
    /// Writes are grouped into one commit with one fsync; survives a process crash and a
    /// power loss.
    #[default]
    GroupCommit,
    /// Every write is its own commit with its own fsync.
    PerMessage,
    /// Commits are written without fsync; survives a process crash, not a power loss.
    Memory,
}

fn default_group_commit_max_delay_ms() -> u64 {
    1
}

fn default_group_commit_max_batch() -> usize {
    256
}

fn default_busy_timeout_ms() -> u64 {
    5_000
}

// The two message store limits below equal those of `MessageStoreSettings::default()`, which
// the test `store_defaults_match_store_settings` checks.

fn default_max_queued_messages_per_session() -> u64 {
    10_000
}

fn default_max_instance_bytes() -> u64 {
    1 << 30
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub id: String,
    pub secret: String,
}

/// An owner account: its root AccessKeys and its RAM users.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    #[serde(default)]
    pub ram_users: Vec<RamUserConfig>,
}

/// A RAM user: AccessKeys whose calls are allowed only by its policy statements.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RamUserConfig {
    pub name: String,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    #[serde(default)]
    pub policies: Vec<StatementConfig>,
}

/// One RAM policy statement; an explicit `Deny` wins over any `Allow`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatementConfig {
    pub effect: EffectConfig,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum EffectConfig {
    Allow,
    Deny,
}

/// One broker instance: an isolated MQTT namespace.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub id: String,
    pub account: String,
    pub region: String,
    pub edition: String,
    #[serde(default)]
    pub disaster_recovery: bool,
    #[serde(default)]
    pub group_ids: Vec<String>,
    #[serde(default)]
    pub parent_topics: Vec<String>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default = "yes")]
    pub require_registered_group_ids: bool,
    #[serde(default = "yes")]
    pub require_registered_parent_topics: bool,
    /// Largest MQTT packet accepted from a device, in bytes.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: u32,
    /// QoS 1 and 2 messages queued per offline or slow session before the oldest is dropped.
    #[serde(default = "default_max_queued_messages")]
    pub max_queued_messages: usize,
    /// The most Group IDs `CreateGroupId` may store for the instance.
    #[serde(default = "default_max_group_ids")]
    pub max_group_ids: usize,
    /// Topic access rules in order; the first that applies to a PUBLISH or SUBSCRIBE decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_rules: Vec<AccessRuleConfig>,
    /// Broker limits left unset keep the broker's defaults, listed in docs/configuration.md.
    #[serde(flatten)]
    pub limits: InstanceLimits,
}

/// Optional broker limits of an instance; each one that is set replaces the broker's default.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_expiry_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keep_alive_seconds: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_alias_maximum: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outbound_topic_aliases: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retained_messages: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topic_length: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topic_levels: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_id_length: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_mqtt31_client_ids: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions_per_client: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_publish_rate: Option<u32>,
}

impl InstanceLimits {
    /// Names the first limit that is set to a value the broker cannot work with.
    fn invalid_value(&self) -> Option<String> {
        let at_least_one = [
            ("receive_maximum", self.receive_maximum.map(u64::from)),
            ("max_inflight", self.max_inflight.map(u64::from)),
            ("max_topic_length", self.max_topic_length.map(u64::from)),
            ("max_topic_levels", self.max_topic_levels.map(u64::from)),
            (
                "max_client_id_length",
                self.max_client_id_length.map(u64::from),
            ),
            (
                "max_subscriptions_per_client",
                self.max_subscriptions_per_client.map(|v| v as u64),
            ),
        ];
        for (name, value) in at_least_one {
            if value == Some(0) {
                return Some(format!("{name} is 0; it must be at least 1"));
            }
        }
        if let Some(timeout) = self.connect_timeout_ms
            && timeout < 100
        {
            return Some(format!(
                "connect_timeout_ms {timeout} is too short for a device to send its CONNECT; use \
                 at least 100"
            ));
        }
        if let Some(prefix) = &self.response_topic_prefix
            && (prefix.is_empty() || prefix.contains(['+', '#']))
        {
            return Some(format!(
                "response_topic_prefix {prefix:?} is invalid; use a topic name without wildcards"
            ));
        }
        None
    }
}

fn yes() -> bool {
    true
}

fn default_max_packet_size() -> u32 {
    1024 * 1024
}

fn default_max_queued_messages() -> usize {
    1000
}

fn default_max_group_ids() -> usize {
    1000
}

/// One listener of an instance or of a global endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub protocol: String,
    pub listen: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Connections the kernel queues before they are accepted. A DR switch makes many devices
    /// reconnect at once, and an overflowing queue drops their SYNs, which costs each of them
    /// a TCP retransmission timeout (1 s on Linux).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
}

fn default_backlog() -> u32 {
    1024
}

/// A disaster-recovery group and its global endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: String,
    /// Member instance ids; the order is the fallback order of the global endpoint.
    pub instances: Vec<String>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// `first`: the first member in order with access; `hash`: spread by client id.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Time a device has to send its CONNECT to the global endpoint, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest CONNECT the global endpoint reads, in bytes.
    #[serde(default = "default_max_connect_bytes")]
    pub max_connect_bytes: u32,
    /// Devices per second disconnected from a downgraded member.
    #[serde(default = "default_disconnect_rate")]
    pub disconnect_rate_per_second: u32,
    /// Whether `DisasterRecovery` of a member moves the devices whose username names it back to
    /// it, disconnecting them from the other members at `disconnect_rate_per_second`.
    #[serde(default)]
    pub rebalance_on_recovery: bool,
}

fn default_fallback() -> String {
    "first".to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

fn default_max_connect_bytes() -> u32 {
    64 * 1024
}

fn default_disconnect_rate() -> u32 {
    1_000
}

/// A configuration error: what is wrong, with the offending value, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads, parses and checks a configuration file. Relative paths in it become relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        let listeners = self
            .instances
            .iter_mut()
            .flat_map(|i| i.listeners.iter_mut())
            .chain(
                self.disaster_recovery_groups
                    .iter_mut()
                    .flat_map(|g| g.listeners.iter_mut()),
            );
        for listener in listeners {
            for path in [
                &mut listener.certificate,
                &mut listener.private_key,
                &mut listener.client_ca,
            ]
            .into_iter()
            .flatten()
            {
                resolve(path);
            }
        }
    }

    /// Checks references between sections, uniqueness and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));

        if self.store.busy_timeout_ms == 0 {
            return invalid("store.busy_timeout_ms must be at least 1".to_owned());
        }
        if let Err(message) = self.store.message_durability() {
            return invalid(message);
        }
        if self.store.max_queued_messages_per_session == 0 {
            return invalid(
                "store.max_queued_messages_per_session is 0; set it to at least 1 (default \
                 10000)"
                    .to_owned(),
            );
        }
        if self.store.max_instance_bytes == 0 {
            return invalid(
                "store.max_instance_bytes is 0; set it to at least the largest max_packet_size \
                 of the instances (default 1073741824)"
                    .to_owned(),
            );
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return invalid(format!(
                "data_dir {} is not a directory; point it at a directory or a path that does not \
                 exist yet",
                self.data_dir.display()
            ));
        }

        let mut account_ids = HashSet::new();
        let mut key_ids = HashSet::new();
        for account in &self.accounts {
            if !account_ids.insert(account.id.as_str()) {
                return invalid(format!("account id {:?} is declared twice", account.id));
            }
            let ram_keys = account.ram_users.iter().flat_map(|u| u.access_keys.iter());
            for key in account.access_keys.iter().chain(ram_keys) {
                if key.id.is_empty() || key.secret.is_empty() {
                    return invalid(format!(
                        "account {:?} has an access key with an empty id or secret",
                        account.id
                    ));
                }
                if !key_ids.insert(key.id.as_str()) {
                    return invalid(format!("access key id {:?} is declared twice", key.id));
                }
            }
        }

        let mut instances: HashMap<&str, &InstanceConfig> = HashMap::new();
        let mut addresses = HashSet::new();
        for instance in &self.instances {
            if !is_valid_instance_id(&instance.id) {
                return invalid(format!(
                    "instance id {:?} is invalid: use 1 to 64 letters, digits, '-' or '_'",
                    instance.id
                ));
            }
            if instances.insert(&instance.id, instance).is_some() {
                return invalid(format!("instance id {:?} is declared twice", instance.id));
            }
            if !account_ids.contains(instance.account.as_str()) {
                return invalid(format!(
                    "instance {:?} names account {:?}, which is not declared under [[accounts]]",
                    instance.id, instance.account
                ));
            }
            if let Err(message) = instance.edition.parse::<Edition>() {
                return invalid(format!("instance {:?}: {message}", instance.id));
            }
            if !is_valid_region(&instance.region) {
                return invalid(format!(
                    "instance {:?}: region {:?} is invalid; use a region id such as \"cn-hangzhou\"",
                    instance.id, instance.region
                ));
            }
            for group_id in &instance.group_ids {
                if let Err(rule) = check_group_id(group_id) {
                    return invalid(format!(
                        "instance {:?}: Group ID {group_id:?} is invalid because {rule}; a Group \
                         ID starts with GID_ or GID-, has {MIN_GROUP_ID_LEN} to \
                         {MAX_GROUP_ID_LEN} characters (so that a client id GroupId@@@DeviceId \
                         fits in {MAX_CLIENT_ID_LEN}) and uses only letters, digits, '-' and '_'",
                        instance.id
                    ));
                }
            }
            for parent in &instance.parent_topics {
                if !is_valid_parent_topic(parent) {
                    return invalid(format!(
                        "instance {:?}: parent topic {parent:?} is invalid; a parent topic is one \
                         topic level of 1 to 64 letters, digits, '-' or '_', without '/' or \
                         wildcards",
                        instance.id
                    ));
                }
            }
            if instance.max_queued_messages == 0 {
                return invalid(format!(
                    "instance {:?}: max_queued_messages is 0; set it to at least 1 (default {})",
                    instance.id,
                    default_max_queued_messages()
                ));
            }
            for (index, rule) in instance.access_rules.iter().enumerate() {
                if let Err(error) = rule.to_rule() {
                    return invalid(format!(
                        "instance {:?}: access rule {} (access_rules[{index}]): {error}",
                        instance.id,
                        index + 1,
                    ));
                }
            }
            let per_session = self.store.max_queued_messages_per_session;
            if instance.max_queued_messages as u64 > per_session {
                return invalid(format!(
                    "instance {:?}: max_queued_messages {} is above \
                     store.max_queued_messages_per_session {per_session}, so the store would \
                     reject publishes to a full queue before the instance drops its oldest \
                     message; lower max_queued_messages or raise \
                     store.max_queued_messages_per_session",
                    instance.id, instance.max_queued_messages
                ));
            }
            if let Some(message) = instance.limits.invalid_value() {
                return invalid(format!("instance {:?}: {message}", instance.id));
            }
            if instance.max_packet_size < 64 {
                return invalid(format!(
                    "instance {:?}: max_packet_size {} is too small; use at least 64 bytes",
                    instance.id, instance.max_packet_size
                ));
            }
            if u64::from(instance.max_packet_size) > self.store.max_instance_bytes {
                return invalid(format!(
                    "instance {:?}: max_packet_size {} is above store.max_instance_bytes {}, so \
                     a message of that size could never be stored; raise \
                     store.max_instance_bytes or lower max_packet_size",
                    instance.id, instance.max_packet_size, self.store.max_instance_bytes
                ));
            }
            let owner = format!("instance {:?}", instance.id);
            for listener in &instance.listeners {
                check_listener(&owner, listener, &mut addresses)?;
            }
        }
        if self.api.listen.port() != 0 && !addresses.insert(self.api.listen) {
            return invalid(format!(
                "api listen address {} is used twice",
                self.api.listen
            ));
        }
        let api_limits = [
            ("max_connections", self.api.max_connections == 0),
            (
                "header_read_timeout_ms",
                self.api.header_read_timeout_ms == 0,
            ),
            ("request_timeout_ms", self.api.request_timeout_ms == 0),
            ("idle_timeout_ms", self.api.idle_timeout_ms == 0),
            ("max_body_bytes", self.api.max_body_bytes == 0),
            ("nonce_cache_capacity", self.api.nonce_cache_capacity == 0),
        ];
        if let Some((key, _)) = api_limits.iter().find(|(_, is_zero)| *is_zero) {
            return invalid(format!("api.{key} is 0; it must be at least 1"));
        }

        let mut group_ids = HashSet::new();
        let mut grouped: HashMap<&str, &str> = HashMap::new();
        for group in &self.disaster_recovery_groups {
            if !is_valid_instance_id(&group.id) {
                return invalid(format!(
                    "disaster-recovery group id {:?} is invalid: use 1 to 64 letters, digits, '-' \
                     or '_'",
                    group.id
                ));
            }
            if !group_ids.insert(group.id.as_str()) {
                return invalid(format!(
                    "disaster-recovery group {:?} is declared twice",
                    group.id
                ));
            }
            if group.instances.len() < 2 {
                return invalid(format!(
                    "disaster-recovery group {:?} has {} member(s); a group needs at least two",
                    group.id,
                    group.instances.len()
                ));
            }
            let mut account = None;
            let mut seen = HashSet::new();
            for member in &group.instances {
                if !seen.insert(member.as_str()) {
                    return invalid(format!(
                        "disaster-recovery group {:?} lists instance {member:?} twice",
                        group.id
                    ));
                }
                let Some(instance) = instances.get(member.as_str()) else {
                    return invalid(format!(
                        "disaster-recovery group {:?} names instance {member:?}, which is not \
                         declared under [[instances]]",
                        group.id
                    ));
                };
                if let Some(other) = grouped.insert(member, &group.id) {
                    return invalid(format!(
                        "instance {member:?} is a member of groups {other:?} and {:?}; an \
                         instance belongs to at most one disaster-recovery group",
                        group.id
                    ));
                }
                if instance.edition != "platinum" || !instance.disaster_recovery {
                    return invalid(format!(
                        "instance {member:?} in disaster-recovery group {:?} must have edition = \
                         \"platinum\" and disaster_recovery = true",
                        group.id
                    ));
                }
                match account {
                    None => account = Some(&instance.account),
                    Some(first) if first != &instance.account => {
                        return invalid(format!(
                            "disaster-recovery group {:?} mixes accounts {first:?} and {:?}; all \
                             members must belong to one account",
                            group.id, instance.account
                        ));
                    }
                    Some(_) => {}
                }
            }
            if !matches!(group.fallback.as_str(), "first" | "hash") {
                return invalid(format!(
                    "disaster-recovery group {:?}: fallback {:?} is invalid; use \"first\" or \
                     \"hash\"",
                    group.id, group.fallback
                ));
            }
            if group.connect_timeout_ms < 100 {
                return invalid(format!(
                    "disaster-recovery group {:?}: connect_timeout_ms {} is too short for a \
                     device to send its CONNECT; use at least 100",
                    group.id, group.connect_timeout_ms
                ));
            }
            if group.disconnect_rate_per_second == 0 {
                return invalid(format!(
                    "disaster-recovery group {:?}: disconnect_rate_per_second must be at least 1",
                    group.id
                ));
            }
            if group.max_connect_bytes < 64 {
                return invalid(format!(
                    "disaster-recovery group {:?}: max_connect_bytes {} is too small; use at \
                     least 64",
                    group.id, group.max_connect_bytes
                ));
            }
            let owner = format!("disaster-recovery group {:?}", group.id);
            for listener in &group.listeners {
                check_listener(&owner, listener, &mut addresses)?;
            }
        }
        Ok(())
    }
}

/// Checks one listener: its protocol, and that it has exactly the keys its protocol takes.
/// Whether the certificate files exist and parse is checked when they are loaded at start.
fn check_listener(
    owner: &str,
    listener: &ListenerConfig,
    addresses: &mut HashSet<SocketAddr>,
) -> Result<(), ConfigError> {
    let invalid = |message: String| Err(ConfigError::Invalid(format!("{owner}: {message}")));
    let transport = match listener.protocol.parse::<Transport>() {
        Ok(transport) => transport,
        Err(message) => return invalid(message),
    };
    let listen = listener.listen;
    if transport.uses_tls() {
        if listener.certificate.is_none() {
            return invalid(format!(
                "{transport} listener {listen} has no certificate; set certificate = \"FILE\" \
                 to a PEM certificate chain"
            ));
        }
        if listener.private_key.is_none() {
            return invalid(format!(
                "{transport} listener {listen} has no private_key; set private_key = \"FILE\" \
                 to the PEM private key of its certificate"
            ));
        }
    } else {
        let tls_keys = [
            ("certificate", listener.certificate.is_some()),
            ("private_key", listener.private_key.is_some()),
            ("client_ca", listener.client_ca.is_some()),
        ];
        if let Some((key, _)) = tls_keys.iter().find(|(_, set)| *set) {
            return invalid(format!(
                "{transport} listener {listen} sets {key}, which only tls and wss listeners \
                 take; remove it or change the protocol"
            ));
        }
    }
    match &listener.path {
        Some(_) if !transport.uses_websocket() => {
            return invalid(format!(
                "{transport} listener {listen} sets path, which only ws and wss listeners take; \
                 remove it or change the protocol"
            ));
        }
        Some(path) if !is_valid_websocket_path(path) => {
            return invalid(format!(
                "{transport} listener {listen} has path {path:?}, which is invalid; use an \
                 absolute URL path such as \"/mqtt\", without spaces, query or fragment"
            ));
        }
        _ => {}
    }
    if listener.backlog == 0 {
        return Err(ConfigError::Invalid(format!(
            "{owner}: listener {} has backlog 0; use at least 1 (default 1024)",
            listener.listen
        )));
    }
    if listener.listen.port() != 0 && !addresses.insert(listener.listen) {
        return Err(ConfigError::Invalid(format!(
            "{owner}: listen address {} is used by another listener",
            listener.listen
        )));
    }
    Ok(())
}

/// Checks a WebSocket path: it starts with `/` and has no query, fragment, space or control
/// character, since the request path is compared without its query string.
fn is_valid_websocket_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '?' && c != '#')
}

/// Checks a parent topic: one topic level of ApsaraMQ topic characters.
fn is_valid_parent_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a region id such as `cn-hangzhou`.
fn is_valid_region(region: &str) -> bool {
    (1..=64).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks an instance id: 1 to 64 ASCII letters, digits, `-` or `_`, as the management API
/// accepts them.
pub fn is_valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
data_dir = "data"

[api]
listen = "127.0.0.1:18080"

[[accounts]]
id = "1000000000000001"
access_keys = [{ id = "LTAIexample", secret = "example-secret" }]

[[instances]]
id = "mqtt-cn-hz01"
account = "1000000000000001"
region = "cn-hangzhou"
edition = "platinum"
disaster_recovery = true
group_ids = ["GID_demo"]
parent_topics = ["sensors"]
listeners = [{ protocol = "tcp", listen = "127.0.0.1:1883" }]

[[instances]]
id = "mqtt-cn-sh01"
account = "1000000000000001"
region = "cn-shanghai"
edition = "platinum"
disaster_recovery = true
listeners = [{ protocol = "tcp", listen = "127.0.0.1:1885" }]

[[disaster_recovery_groups]]
id = "global"
instances = ["mqtt-cn-hz01", "mqtt-cn-sh01"]
listeners = [{ protocol = "tcp", listen = "127.0.0.1:1884" }]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, text).expect("write configuration");
        Config::load(&path)
    }

    fn error_of(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("configuration was accepted"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn valid_config_loads_with_defaults() {
        let config = load(VALID).expect("valid configuration");
        let instance = &config.instances[0];
        assert!(!instance.allow_anonymous);
        assert!(instance.require_registered_group_ids);
        assert!(instance.require_registered_parent_topics);
        assert_eq!(config.disaster_recovery_groups[0].fallback, "first");
        assert_eq!(
            config.disaster_recovery_groups[0].disconnect_rate_per_second,
            1000
        );
        assert!(
            config.data_dir.is_absolute(),
            "data_dir is resolved against the file"
        );
    }

    #[test]
    fn api_defaults_match_api_settings() {
        let api = load(VALID).expect("valid configuration").api;
        let settings = switchyard_api::ApiSettings::default();
        assert_eq!(
            api.throttle_rate_per_second,
            settings.throttle_rate_per_second
        );
        assert_eq!(api.throttle_burst, settings.throttle_burst);
        assert_eq!(api.max_connections, settings.max_connections);
        assert_eq!(
            u128::from(api.header_read_timeout_ms),
            settings.header_read_timeout.as_millis()
        );
        assert_eq!(
            u128::from(api.request_timeout_ms),
            settings.request_timeout.as_millis()
        );
        assert_eq!(
            u128::from(api.idle_timeout_ms),
            settings.idle_timeout.as_millis()
        );
        assert_eq!(api.max_body_bytes, settings.max_body_bytes);
        assert_eq!(api.nonce_cache_capacity, settings.nonce_cache_capacity);
    }

    #[test]
    fn zero_api_limits_are_named() {
        let keys = [
            "max_connections",
            "header_read_timeout_ms",
            "request_timeout_ms",
            "idle_timeout_ms",
            "max_body_bytes",
            "nonce_cache_capacity",
        ];
        for key in keys {
            let text = VALID.replace(
                "listen = \"127.0.0.1:18080\"",
                &format!("listen = \"127.0.0.1:18080\"\n{key} = 0"),
            );
            let message = error_of(&text);
            assert!(message.contains(&format!("api.{key}")), "{message}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let text = VALID.replace(
            "region = \"cn-hangzhou\"",
            "region = \"cn-hangzhou\"\nregoin = 1",
        );
        let message = error_of(&text);
        assert!(message.contains("regoin"), "{message}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            (
                VALID.replacen("edition = \"platinum\"", "edition = \"gold\"", 1),
                "gold",
            ),
            (
                VALID.replacen("account = \"1000000000000001\"", "account = \"42\"", 1),
                "\"42\"",
            ),
            (
                VALID.replace("\"mqtt-cn-sh01\"]", "\"mqtt-cn-bj01\"]"),
                "mqtt-cn-bj01",
            ),
            (
                VALID.replace("127.0.0.1:1885", "127.0.0.1:1883"),
                "127.0.0.1:1883",
            ),
            (
                VALID.replacen("protocol = \"tcp\"", "protocol = \"quic\"", 1),
                "quic",
            ),
            (
                VALID.replacen("protocol = \"tcp\"", "protocol = \"tls\"", 1),
                "has no certificate",
            ),
            (
                VALID.replace("id = \"global\"", "id = \"global\"\nfallback = \"random\""),
                "random",
            ),
            (
                VALID.replacen("id = \"mqtt-cn-hz01\"", "id = \"bad id\"", 1),
                "bad id",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(expected),
                "expected {expected:?} in: {message}"
            );
        }
    }

    /// Sets the first instance's `access_rules` to an inline TOML array of `rules`.
    fn with_access_rules(rules: &str) -> String {
        VALID.replacen(
            "region = \"cn-hangzhou\"",
            &format!("region = \"cn-hangzhou\"\naccess_rules = [{rules}]"),
            1,
        )
    }

    #[test]
    fn access_rules_load_in_order() {
        let text = with_access_rules(
            r#"
  { effect = "DENY", permit_action = "SUB", topic = "test/nosubscribe", reason_code = "unspecified_error" },
  { effect = "ALLOW", permit_action = "PUB_SUB", topic = "devices/%c/#", client_id = "GID_demo@@@*" },
  { effect = "DENY", permit_action = "PUB", topic = "users/%u/#", username = "Signature|*" },
"#,
        );
        let config = load(&text).expect("valid access rules");
        let rules = &config.instances[0].access_rules;
        assert_eq!(rules.len(), 3);
        let built: Vec<String> = rules
            .iter()
            .map(|rule| rule.to_rule().expect("valid rule").to_string())
            .collect();
        assert_eq!(
            built,
            [
                "DENY SUB \"test/nosubscribe\"",
                "ALLOW PUB_SUB \"devices/%c/#\"",
                "DENY PUB \"users/%u/#\"",
            ]
        );
        assert!(load(VALID).unwrap().instances[0].access_rules.is_empty());
    }

    #[test]
    fn invalid_access_rules_are_named() {
        let cases = [
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a/#/b" }"#,
                "instance \"mqtt-cn-hz01\": access rule 1 (access_rules[0]): topic \"a/#/b\" is \
                 not a valid topic filter",
            ),
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a/%x" }"#,
                "unknown placeholder",
            ),
            (
                r#"{ effect = "ALLOW", permit_action = "SUB", topic = "a", reason_code = "unspecified_error" }"#,
                "an ALLOW rule refuses nothing",
            ),
            (
                r#"{ effect = "ALLOW", permit_action = "SUB", topic = "a", subscribe_match = "cover" }"#,
                "takes no subscribe match",
            ),
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a", subscribe_match = "exact" }"#,
                "unknown variant `exact`, expected `overlap` or `cover`",
            ),
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a", client_id = "" }"#,
                "client selector client_id is empty",
            ),
            (
                r#"{ effect = "allow", permit_action = "SUB", topic = "a" }"#,
                "unknown variant `allow`, expected `ALLOW` or `DENY`",
            ),
            (
                r#"{ effect = "DENY", permit_action = "PUBSUB", topic = "a" }"#,
                "unknown variant `PUBSUB`",
            ),
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a", reason = 1 }"#,
                "unknown field `reason`",
            ),
            (
                r#"{ effect = "DENY", permit_action = "SUB", topic = "a", reason_code = "0x80" }"#,
                "unknown variant `0x80`",
            ),
        ];
        for (rule, expected) in cases {
            let message = error_of(&with_access_rules(rule));
            assert!(
                message.contains(expected),
                "expected {expected:?} in: {message}"
            );
        }
    }

    /// Replaces the first instance's listener list with `listeners`.
    fn with_listeners(listeners: &str) -> String {
        VALID.replacen(
            "listeners = [{ protocol = \"tcp\", listen = \"127.0.0.1:1883\" }]",
            &format!("listeners = [{listeners}]"),
            1,
        )
    }

    #[test]
    fn every_transport_loads() {
        let text = with_listeners(
            r#"
  { protocol = "tcp", listen = "127.0.0.1:1883" },
  { protocol = "tls", listen = "127.0.0.1:8883", certificate = "server.pem", private_key = "server.key" },
  { protocol = "tls", listen = "127.0.0.1:8884", certificate = "server.pem", private_key = "server.key", client_ca = "ca.pem" },
  { protocol = "ws", listen = "127.0.0.1:8083" },
  { protocol = "wss", listen = "127.0.0.1:8084", path = "/devices", certificate = "server.pem", private_key = "server.key" },
"#,
        );
        let config = load(&text).expect("valid configuration");
        let listeners = &config.instances[0].listeners;
        assert_eq!(listeners.len(), 5);
        let tls = &listeners[2];
        let certificate = tls.certificate.as_ref().expect("certificate");
        assert!(certificate.is_absolute(), "{}", certificate.display());
        assert!(certificate.ends_with("server.pem"));
        let client_ca = tls.client_ca.as_ref().expect("client_ca");
        assert!(client_ca.is_absolute(), "{}", client_ca.display());
        assert_eq!(listeners[3].path, None);
        assert_eq!(listeners[4].path.as_deref(), Some("/devices"));
    }

    #[test]
    fn listener_keys_must_fit_protocol() {
        let cases = [
            (
                r#"{ protocol = "tls", listen = "127.0.0.1:8883", certificate = "server.pem" }"#,
                "has no private_key",
            ),
            (
                r#"{ protocol = "wss", listen = "127.0.0.1:8883", private_key = "server.key" }"#,
                "has no certificate",
            ),
            (
                r#"{ protocol = "tcp", listen = "127.0.0.1:1883", certificate = "server.pem" }"#,
                "sets certificate",
            ),
            (
                r#"{ protocol = "ws", listen = "127.0.0.1:1883", client_ca = "ca.pem" }"#,
                "sets client_ca",
            ),
            (
                r#"{ protocol = "tcp", listen = "127.0.0.1:1883", path = "/mqtt" }"#,
                "sets path",
            ),
            (
                r#"{ protocol = "tls", listen = "127.0.0.1:1883", path = "/mqtt", certificate = "a", private_key = "b" }"#,
                "sets path",
            ),
            (
                r#"{ protocol = "ws", listen = "127.0.0.1:1883", path = "mqtt" }"#,
                "\"mqtt\"",
            ),
            (
                r#"{ protocol = "ws", listen = "127.0.0.1:1883", path = "/mqtt?x=1" }"#,
                "query",
            ),
            (
                r#"{ protocol = "ws", listen = "127.0.0.1:1883", path = "/my path" }"#,
                "spaces",
            ),
        ];
        for (listener, expected) in cases {
            let message = error_of(&with_listeners(listener));
            assert!(
                message.contains(expected),
                "expected {expected:?} in: {message}"
            );
            assert!(message.contains("mqtt-cn-hz01"), "{message}");
        }
    }

    #[test]
    fn group_listener_keys_are_checked() {
        let text = VALID.replace(
            "listeners = [{ protocol = \"tcp\", listen = \"127.0.0.1:1884\" }]",
            "listeners = [{ protocol = \"wss\", listen = \"127.0.0.1:1884\" }]",
        );
        let message = error_of(&text);
        assert!(message.contains("group \"global\""), "{message}");
        assert!(message.contains("has no certificate"), "{message}");
    }

    #[test]
    fn instance_limits_are_read_and_checked() {
        let text = VALID.replacen(
            "region = \"cn-hangzhou\"",
            "region = \"cn-hangzhou\"\nmax_publish_rate = 5\nconnect_timeout_ms = 2000",
            1,
        );
        let config = load(&text).expect("limits are valid");
        assert_eq!(config.instances[0].limits.max_publish_rate, Some(5));
        assert_eq!(config.instances[0].limits.connect_timeout_ms, Some(2000));
        assert_eq!(config.instances[1].limits.max_publish_rate, None);

        let text = VALID.replacen(
            "region = \"cn-hangzhou\"",
            "region = \"cn-hangzhou\"\nreceive_maximum = 0",
            1,
        );
        assert!(error_of(&text).contains("receive_maximum is 0"));
    }

    /// Returns `VALID` with `keys` in a `[store]` section.
    fn with_store(keys: &str) -> String {
        VALID.replacen("\n[api]", &format!("\n[store]\n{keys}\n\n[api]"), 1)
    }

    #[test]
    fn store_defaults_match_store_settings() {
        let config = load(VALID).expect("valid configuration");
        let settings = config
            .store
            .message_store_settings()
            .expect("default store settings are valid");
        assert_eq!(settings, MessageStoreSettings::default());
    }

    #[test]
    fn store_limits_are_read() {
        let text =
            with_store("max_queued_messages_per_session = 2000\nmax_instance_bytes = 2097152");
        let config = load(&text).expect("store limits are valid");
        let settings = config
            .store
            .message_store_settings()
            .expect("store settings are valid");
        assert_eq!(settings.max_queued_messages_per_session, 2000);
        assert_eq!(settings.max_instance_bytes, 2_097_152);
    }

    #[test]
    fn invalid_store_limits_are_named() {
        let cases = [
            (
                with_store("max_queued_messages_per_session = 0"),
                "store.max_queued_messages_per_session is 0",
            ),
            (
                with_store("max_instance_bytes = 0"),
                "store.max_instance_bytes is 0",
            ),
            // Below the default max_queued_messages of 1000.
            (
                with_store("max_queued_messages_per_session = 999"),
                "max_queued_messages 1000 is above store.max_queued_messages_per_session 999",
            ),
            // Below the default max_packet_size of 1048576.
            (
                with_store("max_instance_bytes = 65536"),
                "max_packet_size 1048576 is above store.max_instance_bytes 65536",
            ),
            (with_store("max_instance_bytes = -1"), "max_instance_bytes"),
            (
                with_store("max_queued_per_session = 10"),
                "max_queued_per_session",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(expected),
                "expected {expected:?} in: {message}"
            );
        }
        let message = error_of(&with_store("max_queued_messages_per_session = 999"));
        assert!(message.contains("mqtt-cn-hz01"), "{message}");
    }

    #[test]
    fn zero_instance_queue_is_named() {
        let text =
            with_store("").replace("region = \"cn-", "max_queued_messages = 0\nregion = \"cn-");
        let message = error_of(&text);
        assert!(
            message.contains("max_queued_messages is 0; set it to at least 1 (default 1000)"),
            "{message}"
        );
        assert!(message.contains("mqtt-cn-hz01"), "{message}");
    }

    #[test]
    fn lower_instance_queue_fits_store() {
        let text = with_store("max_queued_messages_per_session = 500").replace(
            "region = \"cn-",
            "max_queued_messages = 500\nregion = \"cn-",
        );
        let config = load(&text).expect("both instances queue at most 500");
        assert_eq!(config.instances[0].max_queued_messages, 500);
        assert_eq!(config.instances[1].max_queued_messages, 500);
    }

    #[test]
    fn group_member_must_support_dr() {
        let text = VALID.replacen("disaster_recovery = true", "disaster_recovery = false", 1);
        let message = error_of(&text);
        assert!(message.contains("mqtt-cn-hz01"), "{message}");
        assert!(message.contains("disaster_recovery = true"), "{message}");
    }

    #[test]
    fn group_needs_two_members() {
        let text = VALID.replace(
            "instances = [\"mqtt-cn-hz01\", \"mqtt-cn-sh01\"]",
            "instances = [\"mqtt-cn-hz01\"]",
        );
        assert!(error_of(&text).contains("at least two"));
    }

    #[test]
    fn rebalance_on_recovery_defaults_off() {
        let config = load(VALID).expect("valid configuration");
        assert!(!config.disaster_recovery_groups[0].rebalance_on_recovery);

        let text = format!("{VALID}rebalance_on_recovery = true\n");
        let config = load(&text).expect("rebalance_on_recovery is a group key");
        assert!(config.disaster_recovery_groups[0].rebalance_on_recovery);
    }

    #[test]
    fn instance_in_two_groups_is_rejected() {
        let text = format!(
            "{VALID}\n[[disaster_recovery_groups]]\nid = \"second\"\ninstances = [\"mqtt-cn-hz01\", \"mqtt-cn-sh01\"]\n"
        );
        assert!(error_of(&text).contains("at most one"));
    }

    #[test]
    fn syntax_error_names_file() {
        let message = error_of("data_dir = ");
        assert!(message.contains("switchyard.toml"), "{message}");
    }
}
