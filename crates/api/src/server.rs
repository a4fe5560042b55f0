//! Settings, the [`ApiServer`], its router and its serve loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;

use crate::account::{Account, KeyStore};
use crate::actions::Services;
use crate::backend::DisasterRecoveryBackend;
use crate::clock::Clock;
use crate::gateway::{self, Gateway};
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
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            throttle_rate_per_second: 100,
            throttle_burst: 200,
            nonce_cache_capacity: 200_000,
            max_body_bytes: 1024 * 1024,
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
}

/// The OnsMqtt management API server.
pub struct ApiServer {
    gateway: Arc<Gateway>,
}

impl ApiServer {
    /// Builds the server. Fails when an AccessKey id is used twice, an id or secret is empty,
    /// or a setting is 0.
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
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return Err(ConfigError::ZeroSetting { name });
            }
        }
        let gateway = Gateway {
            keys: KeyStore::new(accounts)?,
            max_body_bytes: settings.max_body_bytes,
            nonce_cache_capacity: settings.nonce_cache_capacity,
            clock,
            nonces: NonceCache::new(settings.nonce_cache_capacity),
            throttle: Throttle::new(settings.throttle_rate_per_second, settings.throttle_burst),
            services: Services { disaster_recovery },
        };
        Ok(Self {
            gateway: Arc::new(gateway),
        })
    }

    /// Returns the router: every method on `/`, and a JSON 404 for other paths. To give
    /// backends the caller's address, serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, as [`ApiServer::serve`] does.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", any(gateway::handle))
            .fallback(gateway::handle_unknown_path)
            .with_state(self.gateway)
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then finishes the requests in
    /// flight and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let address = listener.local_addr()?;
        tracing::info!(%address, "OnsMqtt API listening");
        let service = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
        match &result {
            Ok(()) => tracing::info!(%address, "OnsMqtt API stopped"),
            Err(error) => tracing::error!(%address, %error, "OnsMqtt API stopped with an error"),
        }
        result
    }
}
