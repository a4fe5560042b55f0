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

    /// Checks whether `identity` may publish to the topic name or subscribe to the topic filter
    /// `topic_or_filter`.
    ///
    /// An error is the MQTT 5.0 reason code to refuse with, normally
    /// [`ReasonCode::NOT_AUTHORIZED`]; a server that withholds the cause uses
    /// [`ReasonCode::UNSPECIFIED_ERROR`]. A 3.1.1 SUBACK carries 0x80 for either, and a refused
    /// 3.x PUBLISH closes the connection.
    fn authorize(
        &self,
        identity: &Identity,
        access: Access,
        topic_or_filter: &str,
    ) -> Result<(), ReasonCode>;
}

/// The operation that [`Authenticator::authorize`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Publishing to a topic name.
    Publish,
    /// Subscribing to a topic filter.
    Subscribe,
}

/// The authenticated client behind a connection, logged with it and passed to
/// [`Authenticator::authorize`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Principal name, such as an AccessKey id or a custom-auth user name; never a secret.
    pub principal: String,
    /// The client id. The broker replaces it with the negotiated one, which it assigns when
    /// the CONNECT had none, before the first `authorize` call.
    pub client_id: String,
    /// The username of the CONNECT, if it had one.
    pub username: Option<String>,
}

impl Identity {
    /// Creates the identity of `principal` for the client id and username of `connect`.
    pub fn of_connect(principal: impl Into<String>, connect: &Connect) -> Identity {
        Identity {
            principal: principal.into(),
            client_id: connect.client_id.to_string(),
            username: connect.username.as_ref().map(ToString::to_string),
        }
    }
}
