//! The interface that decides who a client is and what it may do.

use std::net::SocketAddr;

use switchyard_codec::{Connect, ReasonCode};

/// Decides who a connecting client is and which topics it may use.
///
/// The broker calls [`authenticate`](Authenticator::authenticate) once per CONNECT and
/// [`authorize`](Authenticator::authorize) on every PUBLISH topic and every SUBSCRIBE filter. Both
/// run on the connection's task, so they must not block.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials of `connect`, which arrived from `peer`.
    ///
    /// An error is the MQTT 5.0 CONNACK reason code to reject the client with, such as
    /// [`ReasonCode::BAD_USER_NAME_OR_PASSWORD`]; the codec maps it to a 3.1.1 return code for
    /// older clients.
    fn authenticate(&self, connect: &Connect, peer: SocketAddr) -> Result<Identity, ReasonCode>;

    /// Reports whether `identity` may publish to the topic name or subscribe to the topic
    /// filter `topic_or_filter`.
    fn authorize(&self, identity: &Identity, access: Access, topic_or_filter: &str) -> bool;
}

/// The operation that [`Authenticator::authorize`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Publishing to a topic name.
    Publish,
    /// Subscribing to a topic filter.
    Subscribe,
}

/// The authenticated principal behind a connection, opaque to the broker and logged with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Principal name, such as an AccessKey id or a custom-auth user name; never a secret.
    pub principal: String,
}
