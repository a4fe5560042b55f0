//! Settings, the [`ApiServer`] and its router. The serve loop is in `listener`.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use tokio::sync::Semaphore;

use crate::account::{Account, KeyStore};
use crate::actions::Services;
use crate::backend::{DisasterRecoveryBackend, GroupIdBackend, NoGroupIdBackend};
use crate::clock::Clock;
use crate::gateway::{self, Gateway};
use crate::listener::{self, ConnectionLimits};
use crate::nonce::NonceCache;
use crate::throttle::Throttle;

/// Limits of the API gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// Requests per second each AccessKey may make on average. Default 100.
    pub throttle_rate_per_second: u32,
    /// Requests an idle AccessKey may make at once before the rate applies. Default 200.
    pub throttle_burst: u32,
    /// Signature nonces remembered at once, over all AccessKeys. Each is kept until its
    /// request's timestamp is more than 15 minutes old, so one AccessKey at the default rate
    /// needs up to 180 000. When the cache is full, requests fail with 503 `ServiceUnavailable`
    /// until entries expire. Default 200 000.
    pub nonce_cache_capacity: usize,
    /// Largest request body accepted, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Connections served at once. At the cap the server accepts no more until one closes, so
    /// further clients wait in the kernel's listen backlog and hold no file descriptor of this
    /// process. Default 1024.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (request line and headers), counted
    /// from the connection's opening, or on a kept-alive connection from the head's first
    /// byte. When it runs out the connection is closed without a response. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time from a complete request head to the response, body reading included. A body still
    /// incomplete at the end gets 408 `RequestTimeout` and the connection is closed, and a
    /// request still being handled gets 503 `ServiceUnavailable`. It also bounds how long
    /// shutdown waits for requests in flight. Default 30 s.
    pub request_timeout: Duration,
    /// Time a kept-alive connection may wait, after a response is ready, for the first byte of
    /// its next request before it is closed. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            throttle_rate_per_second: 100,
            throttle_burst: 200,
            nonce_cache_capacity: 200_000,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A configuration the server cannot start with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("an account has an empty id; give every account a unique id")]
    EmptyAccountId,
    #[error("account {id} is configured twice; merge its keys and RAM users into one entry")]
    DuplicateAccount { id: String },
    #[error("account {account_id} has a RAM user with an empty name; name every RAM user")]
    EmptyRamUserName { account_id: String },
    #[error("account {account_id} has an AccessKey with an empty id; give every key an id")]
    EmptyAccessKeyId { account_id: String },
    #[error("AccessKey {access_key_id} has an empty secret; set a secret for it")]
    EmptyAccessKeySecret { access_key_id: String },
    #[error("AccessKey id {id} is configured more than once; AccessKey ids must be unique")]
    DuplicateAccessKey { id: String },
    #[error("setting {name} is 0; it must be at least 1")]
    ZeroSetting { name: &'static str },
    #[error("setting {name} is 0; set a duration longer than 0")]
    ZeroTimeout { name: &'static str },
    #[error("setting {name} is {value}; it must be at most {max}")]
    SettingTooLarge {
        name: &'static str,
        value: usize,
        max: usize,
    },
}

/// The OnsMqtt management API server.
pub struct ApiServer {
    gateway: Gateway,
    connection_limits: ConnectionLimits,
}

impl ApiServer {
    /// Builds the server, with the Group ID actions returning 404 `ApiNotSupport` until
    /// [`ApiServer::with_group_id_backend`] sets their backend. Fails when an AccessKey id is used twice, an id or secret is empty,
    /// a setting is 0, or `max_connections` is above [`Semaphore::MAX_PERMITS`].
    pub fn new(
        accounts: Vec<Account>,
        settings: ApiSettings,
        disaster_recovery: Arc<dyn DisasterRecoveryBackend>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let nonzero = [
            (
                "throttle_rate_per_second",
                settings.throttle_rate_per_second as usize,
            ),
            ("throttle_burst", settings.throttle_burst as usize),
            ("nonce_cache_capacity", settings.nonce_cache_capacity),
            ("max_body_bytes", settings.max_body_bytes),
            ("max_connections", settings.max_connections),
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return Err(ConfigError::ZeroSetting { name });
            }
        }
        let timeouts = [
            ("header_read_timeout", settings.header_read_timeout),
            ("request_timeout", settings.request_timeout),
            ("idle_timeout", settings.idle_timeout),
        ];
        for (name, value) in timeouts {
            if value.is_zero() {
                return Err(ConfigError::ZeroTimeout { name });
            }
        }
        if settings.max_connections > Semaphore::MAX_PERMITS {
            return Err(ConfigError::SettingTooLarge {
                name: "max_connections",
                value: settings.max_connections,
                max: Semaphore::MAX_PERMITS,
            });
        }
        let connection_limits = ConnectionLimits {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout,
            request_timeout: settings.request_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let gateway = Gateway {
            keys: KeyStore::new(accounts)?,
            max_body_bytes: settings.max_body_bytes,
            request_timeout: settings.request_timeout,
            nonce_cache_capacity: settings.nonce_cache_capacity,
            clock,
            nonces: NonceCache::new(settings.nonce_cache_capacity),
            throttle: Throttle::new(settings.throttle_rate_per_second, settings.throttle_burst),
            services: Services {
                disaster_recovery,
                group_ids: Arc::new(NoGroupIdBackend),
            },
        };
        Ok(Self {
            gateway,
            connection_limits,
        })
    }

    /// Sets the backend of `CreateGroupId`, `DeleteGroupId` and `ListGroupId`.
    pub fn with_group_id_backend(mut self, group_ids: Arc<dyn GroupIdBackend>) -> Self {
        self.gateway.services.group_ids = group_ids;
        self
    }

    /// Returns the router: every method on `/`, and a JSON 404 for other paths. The gateway
    /// applies `request_timeout` and `max_body_bytes`, but the connection limits and the other
    /// timeouts are enforced only by [`ApiServer::serve`]. To give backends the caller's
    /// address, serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", any(gateway::handle))
            .fallback(gateway::handle_unknown_path)
            .with_state(Arc::new(self.gateway))
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, with the connection cap and
    /// timeouts of [`ApiSettings`]. At shutdown it stops accepting, closes idle connections,
    /// lets requests in flight finish for at most `request_timeout`, then closes the rest and
    /// returns. Accept errors pause the loop instead of ending it, so the only error is a
    /// listener without a local address.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let address = listener.local_addr()?;
        let limits = self.connection_limits;
        tracing::info!(
            %address,
            max_connections = limits.max_connections,
            "OnsMqtt API listening"
        );
        let router = self.router();
        listener::serve(listener, router, limits, shutdown).await;
        tracing::info!(%address, "OnsMqtt API stopped");
        Ok(())
    }
}
