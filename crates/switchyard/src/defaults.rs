//! The embedded default deployment that `switchyard serve` starts without a configuration file:
//! one account, two platinum instances in one DR group, its global endpoint and the API.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::config::{
    AccessKeyConfig, AccountConfig, ApiConfig, Config, GroupConfig, InstanceConfig, ListenerConfig,
    StoreConfig,
};

pub const ACCOUNT_ID: &str = "1000000000000001";
pub const GROUP_ID: &str = "GID_demo";
pub const PARENT_TOPIC: &str = "sensors";
const CREDENTIALS_FILE: &str = "default-access-key.toml";

/// The AccessKey of the default account, generated on first start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultAccessKey {
    pub access_key_id: String,
    pub access_key_secret: String,
}

/// Returns the path of the file that stores the default AccessKey.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CREDENTIALS_FILE)
}

/// Reads the default AccessKey from the data directory, generating and storing it on first start.
pub fn load_or_create_access_key(data_dir: &Path) -> anyhow::Result<DefaultAccessKey> {
    let path = credentials_path(data_dir);
    if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "failed to read the default AccessKey from {}",
                path.display()
            )
        })?;
        return toml::from_str(&text).with_context(|| {
            format!(
                "invalid default AccessKey file {}; delete it to generate a new key",
                path.display()
            )
        });
    }

    fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let key = DefaultAccessKey {
        access_key_id: format!("LTAI{}", random_alphanumeric(20)),
        access_key_secret: random_alphanumeric(30),
    };
    let body = toml::to_string(&key).context("failed to encode the default AccessKey")?;
    let text = format!(
        "# AccessKey of account {ACCOUNT_ID} of the default deployment, generated on first \
         start.\n{body}"
    );
    write_private_file(&path, text.as_bytes()).with_context(|| {
        format!(
            "failed to store the default AccessKey in {}",
            path.display()
        )
    })?;
    Ok(key)
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Writes a file only its owner can read, since it contains a secret.
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Builds the default deployment's configuration around the given AccessKey.
pub fn default_config(data_dir: PathBuf, key: &DefaultAccessKey) -> Config {
    let instance = |id: &str, region: &str, port: u16| InstanceConfig {
        id: id.to_owned(),
        account: ACCOUNT_ID.to_owned(),
        region: region.to_owned(),
        edition: "platinum".to_owned(),
        disaster_recovery: true,
        group_ids: vec![GROUP_ID.to_owned()],
        parent_topics: vec![PARENT_TOPIC.to_owned()],
        listeners: vec![tcp_listener(port)],
        allow_anonymous: false,
        require_registered_group_ids: true,
        require_registered_parent_topics: true,
        max_packet_size: 1024 * 1024,
        max_queued_messages: 1000,
        max_group_ids: 1000,
        access_rules: Vec::new(),
        limits: Default::default(),
    };
    Config {
        data_dir,
        api: ApiConfig {
            listen: ([127, 0, 0, 1], 18080).into(),
            throttle_rate_per_second: 100,
            throttle_burst: 200,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_body_bytes: 1024 * 1024,
            nonce_cache_capacity: 200_000,
        },
        store: StoreConfig::default(),
        accounts: vec![AccountConfig {
            id: ACCOUNT_ID.to_owned(),
            access_keys: vec![AccessKeyConfig {
                id: key.access_key_id.clone(),
                secret: key.access_key_secret.clone(),
            }],
            ram_users: Vec::new(),
        }],
        instances: vec![
            instance("mqtt-cn-hz01", "cn-hangzhou", 1883),
            instance("mqtt-cn-sh01", "cn-shanghai", 1885),
        ],
        disaster_recovery_groups: vec![GroupConfig {
            id: "global".to_owned(),
            instances: vec!["mqtt-cn-hz01".to_owned(), "mqtt-cn-sh01".to_owned()],
            listeners: vec![tcp_listener(1884)],
            fallback: "first".to_owned(),
            connect_timeout_ms: 10_000,
            max_connect_bytes: 64 * 1024,
            disconnect_rate_per_second: 1_000,
            rebalance_on_recovery: false,
        }],
    }
}

fn tcp_listener(port: u16) -> ListenerConfig {
    ListenerConfig {
        protocol: "tcp".to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        path: None,
        certificate: None,
        private_key: None,
        client_ca: None,
        backlog: 1024,
    }
}
