//! Switchyard's broker core: MQTT instances with their sessions, subscription trees and
//! connections, for MQTT 3.1, 3.1.1 and 5.0 over any byte stream.
//!
//! An [`Instance`] is one isolated namespace. Its region listeners call [`Instance::serve`]; the
//! DR global endpoint reads each CONNECT itself with [`read_connect`] and hands the connection
//! over with [`Instance::accept_connection`]. Who may connect, publish and subscribe is decided
//! by an [`Authenticator`].
//!
//! # Layout
//!
//! - `settings`: [`InstanceSettings`], the limits and timeouts of an instance.
//! - `auth`: the [`Authenticator`] trait with [`Identity`] and [`Access`].
//! - `instance`: [`Instance`]: the session registry, the subscription tree, retained messages
//!   and shutdown. `instance/sessions.rs` handles the life of sessions with their expiry and
//!   will timers, `instance/routing.rs` the routing of published messages, and
//!   `instance/handover.rs` the [`DetachedSession`] that moves an offline session to another
//!   instance through a [`SessionHandover`].
//! - `listener`: [`Instance::serve`], the accept loop of a region listener.
//! - `handshake`: [`read_connect`] and [`write_connack_refusal`], shared with the DR endpoint.
//! - `linger`: [`linger_close`], which keeps reading for a bounded time after the server's last
//!   packet so that a client still writing can read it.
//! - `negotiate`: the server's decisions on a CONNECT (client id, keep-alive, session expiry,
//!   windows) and the CONNACK properties that announce them.
//! - `connection`: the driver of one connection: the reader that handles each packet type
//!   (`connection/inbound.rs`), the batching writer (`connection/writer.rs`), and
//!   [`ConnectionHandle`] with [`Origin`].
//! - `session`: the sans-I/O session state machine: packet ids, the outbound window, QoS 1 and
//!   QoS 2 state in both directions, the message queue (`session/queue.rs`), session expiry and
//!   the will message (`session/will.rs`).
//! - `subscriptions`: the subscription tree that matches topic names against filters.
//! - `shared`: shared subscription groups and the choice of the member for each message.
//! - `retained`: the retained message store behind the `RetainedStore` trait.
//! - `persist`: the instance's `MessageStore` handle and the conversions between sessions,
//!   messages and wills and their store records; `session/stored.rs` records each session's
//!   store writes and rebuilds sessions, and `instance/restore.rs` is [`Instance::with_store`].
//! - `will`: will messages and the rules for when they are published.
//! - `topic_alias`: MQTT 5.0 Topic Aliases in both directions.
//! - `rate`: the token bucket behind the connection and publish rate limits.
//! - `message`: messages shared by all their receivers, and one delivery of a message.
//! - `ids`: the `ClientId` and `ConnectionId` newtypes.

mod auth;
mod connection;
mod handshake;
mod ids;
mod instance;
mod linger;
mod listener;
mod message;
mod negotiate;
mod persist;
mod rate;
mod retained;
mod session;
mod settings;
mod shared;
mod subscriptions;
mod topic_alias;
mod will;

pub use auth::{Access, Authenticator, Identity};
pub use connection::{ConnectionHandle, Origin};
pub use handshake::{ReadConnectError, read_connect, write_connack_refusal};
pub use instance::{DetachedSession, Instance, SessionHandover};
pub use linger::linger_close;
pub use settings::InstanceSettings;
