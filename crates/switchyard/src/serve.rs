//! `switchyard serve`: builds every component from a [`Config`], binds every listener, prints the
//! endpoints and runs until SIGTERM or Ctrl-C.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchyard_api::{
    AccessKey, Account, ApiServer, ApiSettings, Effect, RamUser, Statement, SystemClock,
};
use switchyard_auth::InstanceAuthPolicy;
use switchyard_broker::{Instance, InstanceSettings};
use switchyard_dr::{
    DrController, Edition, FallbackPolicy, GroupSettings, InstanceInfo, Member, Registry,
};
use switchyard_store::{SqliteSettings, SqliteStore, Store};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::authenticator::PolicyAuthenticator;
use crate::config::{AccountConfig, Config, EffectConfig, GroupConfig, ListenerConfig};

/// Time connections get to close after a shutdown signal before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One bound listener, for the start-up summary.
pub struct Endpoint {
    pub kind: &'static str,
    pub owner: String,
    pub protocol: String,
    pub addr: SocketAddr,
}

/// A running deployment.
pub struct Deployment {
    pub endpoints: Vec<Endpoint>,
    pub shutdown: CancellationToken,
    instances: Vec<Arc<Instance>>,
    tasks: JoinSet<()>,
}

/// Builds and starts everything the configuration declares.
pub async fn start(config: &Config) -> anyhow::Result<Deployment> {
    let busy_timeout = Duration::from_millis(config.store.busy_timeout_ms);
    let store = SqliteStore::open(&config.data_dir, SqliteSettings { busy_timeout })
        .with_context(|| format!("failed to open the store in {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);

    let group_of: HashMap<&str, &GroupConfig> = config
        .disaster_recovery_groups
        .iter()
        .flat_map(|g| g.instances.iter().map(move |i| (i.as_str(), g)))
        .collect();
    let accounts: HashMap<&str, &AccountConfig> =
        config.accounts.iter().map(|a| (a.id.as_str(), a)).collect();

    let mut members = Vec::new();
    for instance_config in &config.instances {
        let group = group_of.get(instance_config.id.as_str());
        let mut accepted: HashSet<String> = HashSet::from([instance_config.id.clone()]);
        if let Some(group) = group {
            accepted.extend(group.instances.iter().cloned());
        }
        let access_keys = accounts
            .get(instance_config.account.as_str())
            .map(|account| account_secrets(account))
            .unwrap_or_default();

        let mut policy = InstanceAuthPolicy::new(instance_config.id.clone());
        policy.accepted_instance_ids = accepted;
        policy.access_keys = access_keys;
        policy.group_ids = instance_config.group_ids.iter().cloned().collect();
        policy.parent_topics = instance_config.parent_topics.iter().cloned().collect();
        policy.allow_anonymous = instance_config.allow_anonymous;
        policy.require_registered_group_ids = instance_config.require_registered_group_ids;
        policy.require_registered_parent_topics = instance_config.require_registered_parent_topics;

        let mut settings = InstanceSettings::new(instance_config.id.clone());
        settings.max_packet_size = instance_config.max_packet_size;
        settings.max_queued_messages = instance_config.max_queued_messages;
        let instance = Instance::new(settings, Arc::new(PolicyAuthenticator::new(policy)));

        let info = InstanceInfo {
            id: instance_config.id.clone(),
            account_id: instance_config.account.clone(),
            region: instance_config.region.clone(),
            edition: instance_config
                .edition
                .parse::<Edition>()
                .map_err(anyhow::Error::msg)?,
            disaster_recovery: instance_config.disaster_recovery,
        };
        let group_id = group.map(|g| g.id.clone());
        members.push(Arc::new(Member::new(info, instance, group_id)));
    }

    let groups = config
        .disaster_recovery_groups
        .iter()
        .map(group_settings)
        .collect();
    let registry = Arc::new(Registry::new(members, groups));
    let controller = DrController::new(registry.clone(), store)
        .context("failed to load the stored disaster-recovery state")?;
    let controller = Arc::new(controller);

    // Bind everything before serving anything, so a taken port fails the start cleanly.
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut endpoints = Vec::new();
    let mut instances = Vec::new();

    for instance_config in &config.instances {
        let Some(member) = registry.member(&instance_config.id) else {
            continue;
        };
        instances.push(member.instance.clone());
        for listener_config in &instance_config.listeners {
            let listener =
                bind(listener_config, &format!("instance {}", instance_config.id)).await?;
            endpoints.push(endpoint(
                "instance",
                &instance_config.id,
                listener_config,
                &listener,
            )?);
            tasks.spawn(member.instance.clone().serve(listener, shutdown.clone()));
        }
    }
    for group_config in &config.disaster_recovery_groups {
        let Some(group) = registry.group(&group_config.id) else {
            continue;
        };
        for listener_config in &group_config.listeners {
            let owner = format!("disaster-recovery group {}", group_config.id);
            let listener = bind(listener_config, &owner).await?;
            endpoints.push(endpoint(
                "global",
                &group_config.id,
                listener_config,
                &listener,
            )?);
            tasks.spawn(switchyard_dr::endpoint::serve(
                group.clone(),
                listener,
                shutdown.clone(),
            ));
        }
    }

    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("failed to bind the management API on {}", config.api.listen))?;
    endpoints.push(Endpoint {
        kind: "api",
        owner: "onsmqtt".to_owned(),
        protocol: "http".to_owned(),
        addr: api_listener.local_addr()?,
    });
    let api_settings = ApiSettings {
        throttle_rate_per_second: config.api.throttle_rate_per_second,
        throttle_burst: config.api.throttle_burst,
        ..ApiSettings::default()
    };
    let api_accounts = config.accounts.iter().map(api_account).collect();
    let api = ApiServer::new(
        api_accounts,
        api_settings,
        controller,
        Arc::new(SystemClock),
    )
    .context("invalid management API settings")?;
    let api_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(err) = api
            .serve(api_listener, api_shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %err, "Management API stopped with an error");
        }
    });

    Ok(Deployment {
        endpoints,
        shutdown,
        instances,
        tasks,
    })
}

impl Deployment {
    /// Stops accepting, closes every connection and waits for the tasks, at most the grace time.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for instance in &self.instances {
            instance.shutdown().await;
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "Shutdown grace period ran out; exiting anyway");
            self.tasks.abort_all();
        }
        info!("Switchyard stopped");
    }
}

async fn bind(listener: &ListenerConfig, owner: &str) -> anyhow::Result<TcpListener> {
    bind_tcp(listener.listen, listener.backlog)
        .with_context(|| format!("failed to bind {owner} listener on {}", listener.listen))
}

/// Binds a TCP listener with the configured accept backlog. `TcpListener::bind` uses 128, like
/// the standard library (mio 1.x), which a reconnection burst after a DR switch overflows.
fn bind_tcp(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

fn endpoint(
    kind: &'static str,
    owner: &str,
    config: &ListenerConfig,
    listener: &TcpListener,
) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        kind,
        owner: owner.to_owned(),
        protocol: config.protocol.clone(),
        addr: listener.local_addr()?,
    })
}

fn group_settings(group: &GroupConfig) -> GroupSettings {
    GroupSettings {
        id: group.id.clone(),
        members: group.instances.clone(),
        fallback: match group.fallback.as_str() {
            "hash" => FallbackPolicy::HashClientId,
            _ => FallbackPolicy::FirstInOrder,
        },
        connect_timeout: Duration::from_millis(group.connect_timeout_ms),
        max_connect_bytes: group.max_connect_bytes,
        disconnect_rate_per_second: group.disconnect_rate_per_second,
    }
}

/// Every AccessKey of an account, root and RAM users alike: all of them sign device logins.
fn account_secrets(account: &AccountConfig) -> HashMap<String, String> {
    let ram_keys = account.ram_users.iter().flat_map(|u| u.access_keys.iter());
    account
        .access_keys
        .iter()
        .chain(ram_keys)
        .map(|k| (k.id.clone(), k.secret.clone()))
        .collect()
}

fn api_account(account: &AccountConfig) -> Account {
    let key = |k: &crate::config::AccessKeyConfig| AccessKey {
        id: k.id.clone(),
        secret: k.secret.clone(),
    };
    Account {
        id: account.id.clone(),
        access_keys: account.access_keys.iter().map(key).collect(),
        ram_users: account
            .ram_users
            .iter()
            .map(|user| RamUser {
                name: user.name.clone(),
                access_keys: user.access_keys.iter().map(key).collect(),
                policies: user
                    .policies
                    .iter()
                    .map(|s| Statement {
                        effect: match s.effect {
                            EffectConfig::Allow => Effect::Allow,
                            EffectConfig::Deny => Effect::Deny,
                        },
                        actions: s.actions.clone(),
                        resources: s.resources.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
