//! Switchyard's management API gateway: the RPC-style `OnsMqtt` 2020-04-20 OpenAPI of
//! ApsaraMQ for MQTT, so the official Alibaba Cloud SDKs work against Switchyard with only the
//! endpoint changed.
//!
//! Requests go to `/` with GET or POST. `Action` and `Version` come from the query string or the
//! `x-acs-action` and `x-acs-version` headers, other parameters from the query string and an
//! `application/x-www-form-urlencoded` body. Both SDK signature schemes are verified: the
//! `ACS3-HMAC-SHA256` `Authorization` header and the classic HMAC-SHA1 `Signature` parameter,
//! with a 15 minute timestamp window and nonce replay protection. Errors are JSON bodies with the
//! cloud's codes; the gateway module lists the checks in the order they run.
//!
//! ```no_run
//! # async fn run(backend: std::sync::Arc<dyn switchyard_api::DisasterRecoveryBackend>)
//! # -> std::io::Result<()> {
//! use std::sync::Arc;
//! use switchyard_api::{AccessKey, Account, ApiServer, ApiSettings, SystemClock};
//!
//! let accounts = vec![Account {
//!     id: "1000000000000001".to_owned(),
//!     access_keys: vec![AccessKey { id: "LTAIexample".to_owned(), secret: "example-secret".to_owned() }],
//!     ram_users: Vec::new(),
//! }];
//! let server = ApiServer::new(accounts, ApiSettings::default(), backend, Arc::new(SystemClock))
//!     .map_err(std::io::Error::other)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:18080").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! # Layout
//!
//! - `account`: accounts, AccessKey pairs, RAM users, and the [`Caller`] of a request.
//! - `ram`: RAM policy evaluation and the `AccessDeniedDetail` of a `NoPermission` denial.
//! - `clock`: the injectable [`Clock`].
//! - `encoding`: RFC 3986 [`percent_encode`] and the strict query and form parser.
//! - [`signature_v1`]: the HMAC-SHA1 `Signature` parameter.
//! - [`signature_v3`]: the `ACS3-HMAC-SHA256` `Authorization` header, with [`sign_acs3`].
//! - `authenticate`: which scheme a request uses, its common parameters, the timestamp window.
//! - `nonce`: the replay cache. `throttle`: the per-AccessKey token buckets.
//! - `errors`: the error codes and the JSON error body.
//! - `gateway`: the `/` handler, which runs every check in order and dispatches the action.
//! - `actions`: one module per action family (disaster recovery, Group IDs); `actions::find`
//!   maps an action name to its handler.
//! - `backend`: [`DisasterRecoveryBackend`] and [`GroupIdBackend`], which the actions call.
//! - `server`: [`ApiSettings`], [`ApiServer`] and its router.
//! - `listener`: the accept loop with the `max_connections` cap, and the header, idle and
//!   shutdown deadlines of each connection.
//! - [`client`]: request builders that sign as the SDKs do, for the load generator and tests.

mod account;
mod actions;
mod authenticate;
mod backend;
pub mod client;
mod clock;
mod encoding;
mod errors;
mod gateway;
mod listener;
mod nonce;
mod ram;
mod server;
pub mod signature_v1;
pub mod signature_v3;
mod throttle;

pub use account::{AccessKey, Account, Caller, Effect, Principal, RamUser, Statement};
pub use backend::{
    ActionContext, BackendFuture, DisasterRecoveryBackend, GroupIdBackend, GroupIdInfo,
    ServiceError, Tag,
};
pub use clock::{Clock, ManualClock, SystemClock, format_utc};
pub use encoding::percent_encode;
pub use server::{ApiServer, ApiSettings, ConfigError};
pub use signature_v3::{Acs3Request, sign_acs3};
