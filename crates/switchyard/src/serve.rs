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
use switchyard_store::{MessageStore, SqliteMessageStore, SqliteSettings, SqliteStore, Store};
use switchyard_transport::rustls::ServerConfig;
use switchyard_transport::{TlsFiles, Transport, TransportAcceptor, load_server_config};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::authenticator::PolicyAuthenticator;
use crate::config::{
    AccessRuleConfig, AccountConfig, Config, EffectConfig, GroupConfig, InstanceConfig,
    ListenerConfig,
};
use crate::group_ids::{GroupIdInstance, GroupIdService};

/// Time connections get to close after a shutdown signal before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One bound listener, for the start-up summary.
pub struct Endpoint {
    pub kind: &'static str,
    pub owner: String,
    pub protocol: String,
    pub addr: SocketAddr,
    /// URL path of a `ws` or `wss` listener.
    pub path: Option<String>,
}

/// A running deployment.
pub struct Deployment {
    pub endpoints: Vec<Endpoint>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    instances: Vec<Arc<Instance>>,
    tasks: JoinSet<()>,
}

/// Opens the message store of persistent sessions and retained messages under `data_dir`,
/// shared by every instance.
async fn open_message_store(config: &Config) -> anyhow::Result<Arc<dyn MessageStore>> {
    let settings = config
        .store
        .message_store_settings()
        .map_err(anyhow::Error::msg)?;
    let durability = settings.durability;
    let max_queued_messages_per_session = settings.max_queued_messages_per_session;
    let max_instance_bytes = settings.max_instance_bytes;
    let data_dir = config.data_dir.clone();
    // Opening reads every record once, so it runs off the async threads.
    let opened = tokio::task::spawn_blocking(move || SqliteMessageStore::open(&data_dir, settings))
        .await
        .context("message store open task failed")?
        .with_context(|| {
            format!(
                "failed to open the message store in {}",
                config.data_dir.display()
            )
        })?;
    tracing::info!(
        file = %opened.path().display(),
        ?durability,
        max_queued_messages_per_session,
        max_instance_bytes,
        "Message store opened"
    );
    Ok(Arc::new(opened))
}

/// Returns `instance_id` followed by the other instances of `sources`, in their order.
fn sharing_order(instance_id: &str, sources: &[&InstanceConfig]) -> Vec<String> {
    let others = sources.iter().filter(|i| i.id != instance_id);
    std::iter::once(instance_id.to_owned())
        .chain(others.map(|i| i.id.clone()))
        .collect()
}

/// Loads the Group IDs created through the API and gives every instance's logins its Group IDs.
async fn load_group_ids(
    store: Arc<dyn Store>,
    instances: Vec<GroupIdInstance>,
) -> anyhow::Result<Arc<GroupIdService>> {
    let service = tokio::task::spawn_blocking(move || GroupIdService::load(store, instances))
        .await
        .context("Group ID load task failed")?
        .context("failed to load the stored Group IDs")?;
    Ok(Arc::new(service))
}

/// Builds and starts everything the configuration declares.
pub async fn start(config: &Config) -> anyhow::Result<Deployment> {
    let busy_timeout = Duration::from_millis(config.store.busy_timeout_ms);
    let store = SqliteStore::open(&config.data_dir, SqliteSettings { busy_timeout })
        .with_context(|| format!("failed to open the store in {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let message_store = open_message_store(config).await?;

    let group_of: HashMap<&str, &GroupConfig> = config
        .disaster_recovery_groups
        .iter()
        .flat_map(|g| g.instances.iter().map(move |i| (i.as_str(), g)))
        .collect();
    let instance_configs: HashMap<&str, &InstanceConfig> = config
        .instances
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    let accounts: HashMap<&str, &AccountConfig> =
        config.accounts.iter().map(|a| (a.id.as_str(), a)).collect();

    let mut members = Vec::new();
    let mut group_id_instances = Vec::new();
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
        // A group shares its metadata: a device the global endpoint moves to another member
        // keeps working there, so each member accepts the Group IDs and parent topics of all.
        // The Group IDs are set by the GroupIdService below, before any listener serves.
        let metadata_sources: Vec<&InstanceConfig> = match group {
            Some(group) => group
                .instances
                .iter()
                .filter_map(|id| instance_configs.get(id.as_str()).copied())
                .collect(),
            None => vec![instance_config],
        };
        policy.parent_topics = metadata_sources
            .iter()
            .flat_map(|i| i.parent_topics.iter().cloned())
            .collect();
        policy.allow_anonymous = instance_config.allow_anonymous;
        policy.require_registered_group_ids = instance_config.require_registered_group_ids;
        policy.require_registered_parent_topics = instance_config.require_registered_parent_topics;
        policy.access_rules = instance_config
            .access_rules
            .iter()
            .map(AccessRuleConfig::to_rule)
            .collect::<Result<_, _>>()
            .with_context(|| format!("invalid access rule of instance {}", instance_config.id))?;

        let mut settings = InstanceSettings::new(instance_config.id.clone());
        settings.max_packet_size = instance_config.max_packet_size;
        settings.max_queued_messages = instance_config.max_queued_messages;
        apply_limits(&mut settings, &instance_config.limits);
        let auth = Arc::new(PolicyAuthenticator::new(policy));
        group_id_instances.push(GroupIdInstance {
            id: instance_config.id.clone(),
            account_id: instance_config.account.clone(),
            dr_group: group.map(|g| g.id.clone()),
            sharing: sharing_order(&instance_config.id, &metadata_sources),
            configured: instance_config.group_ids.iter().cloned().collect(),
            max_group_ids: instance_config.max_group_ids,
            authenticator: auth.clone(),
        });
        let instance = Instance::with_store(settings, auth, Arc::clone(&message_store))
            .await
            .with_context(|| {
                format!(
                    "failed to restore instance {} from the message store",
                    instance_config.id
                )
            })?;

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
    let controller = DrController::new(registry.clone(), store.clone())
        .context("failed to load the stored disaster-recovery state")?;
    let controller = Arc::new(controller);
    let group_ids = load_group_ids(store, group_id_instances).await?;

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
        let owner = format!("instance {}", instance_config.id);
        let limits = TransportLimits {
            handshake_timeout: member.instance.settings().connect_timeout,
            max_packet_size: instance_config.max_packet_size,
        };
        for listener_config in &instance_config.listeners {
            let acceptor = Arc::new(transport_acceptor(listener_config, &owner, limits)?);
            let listener = bind(listener_config, &owner).await?;
            endpoints.push(endpoint(
                "instance",
                &instance_config.id,
                listener_config,
                &listener,
                &acceptor,
            )?);
            let serve = member
                .instance
                .clone()
                .serve_with(listener, acceptor, shutdown.clone());
            tasks.spawn(serve);
        }
    }
    for group_config in &config.disaster_recovery_groups {
        let Some(group) = registry.group(&group_config.id) else {
            continue;
        };
        let owner = format!("disaster-recovery group {}", group_config.id);
        // A device's packets after CONNECT go to the member on the same stream, so the
        // WebSocket limit has to fit the largest max_packet_size of the members.
        let max_packet_size = config
            .instances
            .iter()
            .filter(|instance| group_config.instances.contains(&instance.id))
            .map(|instance| instance.max_packet_size)
            .max()
            .unwrap_or(group_config.max_connect_bytes);
        let limits = TransportLimits {
            handshake_timeout: Duration::from_millis(group_config.connect_timeout_ms),
            max_packet_size,
        };
        for listener_config in &group_config.listeners {
            let acceptor = Arc::new(transport_acceptor(listener_config, &owner, limits)?);
            let listener = bind(listener_config, &owner).await?;
            endpoints.push(endpoint(
                "global",
                &group_config.id,
                listener_config,
                &listener,
                &acceptor,
            )?);
            tasks.spawn(switchyard_dr::endpoint::serve_with(
                group.clone(),
                listener,
                acceptor,
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
        path: None,
    });
    let api_settings = ApiSettings {
        throttle_rate_per_second: config.api.throttle_rate_per_second,
        throttle_burst: config.api.throttle_burst,
        nonce_cache_capacity: config.api.nonce_cache_capacity,
        max_body_bytes: config.api.max_body_bytes,
        max_connections: config.api.max_connections,
        header_read_timeout: Duration::from_millis(config.api.header_read_timeout_ms),
        request_timeout: Duration::from_millis(config.api.request_timeout_ms),
        idle_timeout: Duration::from_millis(config.api.idle_timeout_ms),
    };
    let api_accounts = config.accounts.iter().map(api_account).collect();
    let api = ApiServer::new(
        api_accounts,
        api_settings,
        controller,
        Arc::new(SystemClock),
    )
    .context("invalid management API settings")?
    .with_group_id_backend(group_ids);
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
        registry,
        shutdown,
        instances,
        tasks,
    })
}

impl Deployment {
    /// Stops accepting, closes every connection and waits for the tasks, at most the grace time.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let instances = std::mem::take(&mut self.instances);
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async move {
            let closing = instances.iter().map(|instance| instance.shutdown());
            futures_join_all(closing).await;
            while tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "Shutdown grace period ran out; exiting anyway");
            self.tasks.abort_all();
        }
        info!("Switchyard stopped");
    }
}

/// Limits of a listener's transport, taken from the instance or group that owns it.
#[derive(Clone, Copy, Debug)]
struct TransportLimits {
    /// Time a client has for the TLS and WebSocket handshakes.
    handshake_timeout: Duration,
    /// Largest MQTT packet the owner accepts, in bytes.
    max_packet_size: u32,
}

/// Smallest limit on a WebSocket message, in bytes, so that one frame may still carry a few
/// small packets when `max_packet_size` is tiny.
const MIN_WEBSOCKET_MESSAGE_SIZE: usize = 64 * 1024;

/// Builds the transport of one listener. For `tls` and `wss` this reads and checks the
/// certificate files, so a missing or invalid file fails the start with the file's name.
fn transport_acceptor(
    listener: &ListenerConfig,
    owner: &str,
    limits: TransportLimits,
) -> anyhow::Result<TransportAcceptor> {
    let transport: Transport = listener
        .protocol
        .parse()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid {owner} listener on {}", listener.listen))?;
    let path = listener.path.as_deref();
    let acceptor = match transport {
        Transport::Tcp => TransportAcceptor::tcp(),
        Transport::Ws => TransportAcceptor::websocket(path),
        Transport::Tls => TransportAcceptor::tls(tls_config(listener, owner)?),
        Transport::Wss => TransportAcceptor::secure_websocket(tls_config(listener, owner)?, path),
    };
    let max_message_size = usize::try_from(limits.max_packet_size)
        .unwrap_or(usize::MAX)
        .max(MIN_WEBSOCKET_MESSAGE_SIZE);
    Ok(acceptor
        .with_handshake_timeout(limits.handshake_timeout)
        .with_max_websocket_message_size(max_message_size))
}

fn tls_config(listener: &ListenerConfig, owner: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let context = || {
        format!(
            "failed to set up TLS for {owner} listener on {}",
            listener.listen
        )
    };
    let (Some(certificate), Some(private_key)) = (&listener.certificate, &listener.private_key)
    else {
        anyhow::bail!(
            "{}: certificate and private_key are both required",
            context()
        );
    };
    let files = TlsFiles {
        certificate: certificate.clone(),
        private_key: private_key.clone(),
        client_ca: listener.client_ca.clone(),
    };
    load_server_config(&files).with_context(context)
}

async fn bind(listener: &ListenerConfig, owner: &str) -> anyhow::Result<TcpListener> {
    bind_tcp(listener.listen, listener.backlog).with_context(|| {
        format!(
            "failed to bind {owner} listener on {}; if another broker or Switchyard uses the \
             port, stop it or choose other addresses in a file passed with --config",
            listener.listen
        )
    })
}

/// Waits for every future, all of them running at once.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
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
    acceptor: &TransportAcceptor,
) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        kind,
        owner: owner.to_owned(),
        protocol: config.protocol.clone(),
        addr: listener.local_addr()?,
        path: acceptor.websocket_path().map(str::to_owned),
    })
}

/// Replaces the broker defaults with the limits the configuration sets.
fn apply_limits(settings: &mut InstanceSettings, limits: &crate::config::InstanceLimits) {
    fn set<T: Clone>(target: &mut T, value: &Option<T>) {
        if let Some(value) = value {
            *target = value.clone();
        }
    }
    set(&mut settings.receive_maximum, &limits.receive_maximum);
    set(&mut settings.max_inflight, &limits.max_inflight);
    if let Some(ms) = limits.connect_timeout_ms {
        settings.connect_timeout = Duration::from_millis(ms);
    }
    set(
        &mut settings.max_session_expiry,
        &limits.max_session_expiry_seconds,
    );
    set(&mut settings.max_keep_alive, &limits.max_keep_alive_seconds);
    set(
        &mut settings.topic_alias_maximum,
        &limits.topic_alias_maximum,
    );
    set(
        &mut settings.max_outbound_topic_aliases,
        &limits.max_outbound_topic_aliases,
    );
    set(
        &mut settings.max_retained_messages,
        &limits.max_retained_messages,
    );
    if limits.response_topic_prefix.is_some() {
        settings.response_topic_prefix = limits.response_topic_prefix.clone();
    }
    set(&mut settings.max_topic_length, &limits.max_topic_length);
    set(&mut settings.max_topic_levels, &limits.max_topic_levels);
    set(
        &mut settings.max_client_id_length,
        &limits.max_client_id_length,
    );
    set(
        &mut settings.strict_mqtt31_client_ids,
        &limits.strict_mqtt31_client_ids,
    );
    set(
        &mut settings.max_subscriptions_per_client,
        &limits.max_subscriptions_per_client,
    );
    set(&mut settings.max_connections, &limits.max_connections);
    set(
        &mut settings.max_connection_rate,
        &limits.max_connection_rate,
    );
    set(&mut settings.max_publish_rate, &limits.max_publish_rate);
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
        rebalance_on_recovery: group.rebalance_on_recovery,
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use switchyard_transport::testing::TestPki;

    use super::*;

    const LIMITS: TransportLimits = TransportLimits {
        handshake_timeout: Duration::from_secs(10),
        max_packet_size: 1024 * 1024,
    };

    fn listener(protocol: &str) -> ListenerConfig {
        ListenerConfig {
            protocol: protocol.to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            path: None,
            certificate: None,
            private_key: None,
            client_ca: None,
            backlog: 1024,
        }
    }

    fn tls_listener(protocol: &str, certificate: PathBuf, private_key: PathBuf) -> ListenerConfig {
        ListenerConfig {
            certificate: Some(certificate),
            private_key: Some(private_key),
            ..listener(protocol)
        }
    }

    fn error_of(listener: &ListenerConfig) -> String {
        match transport_acceptor(listener, "instance mqtt-test", LIMITS) {
            Ok(acceptor) => panic!("listener was accepted: {acceptor:?}"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn acceptor_matches_protocol() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = TestPki::generate().write_files(dir.path());
        let cases = [
            (listener("tcp"), Transport::Tcp, None),
            (listener("ws"), Transport::Ws, Some("/mqtt")),
            (
                tls_listener(
                    "tls",
                    files.server_certificate.clone(),
                    files.server_key.clone(),
                ),
                Transport::Tls,
                None,
            ),
            (
                ListenerConfig {
                    path: Some("/devices".to_owned()),
                    client_ca: Some(files.ca_certificate.clone()),
                    ..tls_listener(
                        "wss",
                        files.server_certificate.clone(),
                        files.server_key.clone(),
                    )
                },
                Transport::Wss,
                Some("/devices"),
            ),
        ];
        for (config, transport, path) in cases {
            let acceptor = transport_acceptor(&config, "instance mqtt-test", LIMITS)
                .expect("listener is accepted");
            assert_eq!(acceptor.transport(), transport);
            assert_eq!(acceptor.websocket_path(), path);
        }
    }

    #[test]
    fn missing_certificate_file_is_named() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = TestPki::generate().write_files(dir.path());
        let absent = dir.path().join("absent.pem");
        let message = error_of(&tls_listener("tls", absent.clone(), files.server_key));
        assert!(message.contains(&absent.display().to_string()), "{message}");
        assert!(
            message.contains("failed to read certificate file"),
            "{message}"
        );
        assert!(message.contains("instance mqtt-test"), "{message}");
    }

    #[test]
    fn bad_pem_is_named() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = TestPki::generate().write_files(dir.path());
        let bad = dir.path().join("bad.key");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\n***\n-----END PRIVATE KEY-----\n",
        )
        .expect("write file");
        let message = error_of(&tls_listener("wss", files.server_certificate, bad.clone()));
        assert!(message.contains(&bad.display().to_string()), "{message}");
        assert!(message.contains("invalid private key file"), "{message}");
    }

    #[test]
    fn tls_without_private_key_is_rejected() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = TestPki::generate().write_files(dir.path());
        let config = ListenerConfig {
            certificate: Some(files.server_certificate),
            ..listener("tls")
        };
        let message = error_of(&config);
        assert!(message.contains("private_key"), "{message}");
    }
}
