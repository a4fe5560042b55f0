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
//! - `instance`: [`Instance`]: the session registry, the subscription tree, routing of published
//!   messages, session expiry timers and shutdown.
//! - `listener`: [`Instance::serve`], the accept loop of a region listener.
//! - `handshake`: [`read_connect`] and [`write_connack_refusal`], shared with the DR endpoint.
//! - `negotiate`: the server's decisions on a CONNECT (client id, keep-alive, session expiry,
//!   windows) and the CONNACK properties that announce them.
//! - `connection`: the driver of one connection: the reader that handles each packet type
//!   (`connection/inbound.rs`), the batching writer (`connection/writer.rs`), and
//!   [`ConnectionHandle`] with [`Origin`].
//! - `session`: the sans-I/O session state machine: packet ids, the outbound window, QoS 1 and
//!   QoS 2 state in both directions, the message queue and session expiry.
//! - `subscriptions`: the subscription tree that matches topic names against filters.
//! - `message`: messages shared by all their receivers, and one delivery of a message.
//! - `ids`: the `ClientId` and `ConnectionId` newtypes.

mod auth;
mod connection;
mod handshake;
mod ids;
mod instance;
mod listener;
mod message;
mod negotiate;
mod session;
mod settings;
mod subscriptions;

pub use auth::{Access, Authenticator, Identity};
pub use connection::{ConnectionHandle, Origin};
pub use handshake::{ReadConnectError, read_connect, write_connack_refusal};
pub use instance::Instance;
pub use settings::InstanceSettings;
