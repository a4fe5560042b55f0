//! The configuration file: TOML, every key named in the product documentation, unknown keys
//! rejected with the key's name, and cross-references checked before anything starts.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_dr::Edition;

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
}

fn default_throttle_rate() -> u32 {
    100
}

fn default_throttle_burst() -> u32 {
    200
}

/// The embedded SQLite store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a write waits for a locked database before it fails, in milliseconds.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            busy_timeout_ms: default_busy_timeout_ms(),
        }
    }
}

fn default_busy_timeout_ms() -> u64 {
    5_000
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
            if instance.max_packet_size < 64 {
                return invalid(format!(
                    "instance {:?}: max_packet_size {} is too small; use at least 64 bytes",
                    instance.id, instance.max_packet_size
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

        let mut group_ids = HashSet::new();
        let mut grouped: HashMap<&str, &str> = HashMap::new();
        for group in &self.disaster_recovery_groups {
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
            for member in &group.instances {
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

/// Checks one listener. Only `tcp` is served so far; `tls`, `ws` and `wss` are named in the
/// contract and fail with a clear message until their transports exist.
fn check_listener(
    owner: &str,
    listener: &ListenerConfig,
    addresses: &mut HashSet<SocketAddr>,
) -> Result<(), ConfigError> {
    match listener.protocol.as_str() {
        "tcp" => {}
        "tls" | "ws" | "wss" => {
            return Err(ConfigError::Invalid(format!(
                "{owner}: listener protocol {:?} on {} is not supported by this version of \
                 Switchyard yet; use protocol = \"tcp\"",
                listener.protocol, listener.listen
            )));
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "{owner}: listener protocol {other:?} is invalid; use tcp, tls, ws or wss"
            )));
        }
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
                "not supported",
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
