//! Handles through which the instance and the DR controller reach a running connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use switchyard_codec::{ProtocolVersion, ReasonCode};
use tokio_util::sync::CancellationToken;

use crate::ids::{ClientId, ConnectionId};

/// The path by which a device reached an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Through one of the instance's own region listeners.
    Region,
    /// Through the global endpoint of the DR group `group`.
    Global { group: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Region => f.write_str("region"),
            Origin::Global { group } => write!(f, "global:{group}"),
        }
    }
}

/// A live connection of an instance, cheap to clone.
///
/// The handle only signals the connection's task, so it never blocks and stays valid after
/// the connection has ended.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    id: ConnectionId,
    client_id: ClientId,
    /// The User Name of the CONNECT, which the DR layer reads the named instance from.
    username: Option<String>,
    protocol: ProtocolVersion,
    origin: Origin,
    peer: SocketAddr,
    control: Control,
}

/// The stop request shared by a connection task and its handles: the first request wins.
#[derive(Debug, Default)]
pub(crate) struct Control {
    stop: CancellationToken,
    request: Mutex<Option<StopRequest>>,
}

/// A request to stop a connection: the reason code of the DISCONNECT sent to MQTT 5.0 clients
/// and, for 0x9C (use another server) and 0x9D (server moved), the Server Reference with the
/// server to connect to instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StopRequest {
    pub(crate) reason: ReasonCode,
    pub(crate) server_reference: Option<String>,
}

// === impl ConnectionHandle ===

impl ConnectionHandle {
    pub(crate) fn new(
        id: ConnectionId,
        client_id: ClientId,
        username: Option<String>,
        protocol: ProtocolVersion,
        origin: Origin,
        peer: SocketAddr,
    ) -> ConnectionHandle {
        let inner = HandleInner {
            id,
            client_id,
            username,
            protocol,
            origin,
            peer,
            control: Control::default(),
        };
        ConnectionHandle {
            inner: Arc::new(inner),
        }
    }

    /// Returns the client identifier, as assigned by the server when the client sent none.
    pub fn client_id(&self) -> &str {
        self.inner.client_id.as_str()
    }

    /// Returns the User Name the client sent in CONNECT, if any.
    pub fn username(&self) -> Option<&str> {
        self.inner.username.as_deref()
    }

    /// Returns the protocol version of the connection.
    pub fn protocol(&self) -> ProtocolVersion {
        self.inner.protocol
    }

    /// Returns how the device reached the instance.
    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// Returns the address of the device.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Asks the connection to close. MQTT 5.0 clients get DISCONNECT with `reason` first, and
    /// MQTT 3.x clients see the connection close.
    ///
    /// Returns at once; the connection's task sends the packet and closes. When several
    /// requests arrive, the first reason is the one sent.
    pub fn disconnect(&self, reason: ReasonCode) {
        self.disconnect_with_reference(reason, None);
    }

    /// Asks the connection to close like [`disconnect`](ConnectionHandle::disconnect), and
    /// sends MQTT 5.0 clients `server_reference` as the DISCONNECT's Server Reference property.
    ///
    /// Meant for server redirection: with reason 0x9C (use another server) or 0x9D (server
    /// moved), the reference names the server to use, such as `mqtt-sh.example.com:1883`. A
    /// reference that would push the DISCONNECT over the client's Maximum Packet Size is left
    /// out. MQTT 3.x has no DISCONNECT from the server, so 3.x clients see the connection close.
    pub fn disconnect_with_reference(&self, reason: ReasonCode, server_reference: Option<String>) {
        self.inner.control.request_stop(StopRequest {
            reason,
            server_reference,
        });
    }

    pub(crate) fn id(&self) -> ConnectionId {
        self.inner.id
    }

    pub(crate) fn control(&self) -> &Control {
        &self.inner.control
    }

    /// Reports whether the connection was asked to close.
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.control.stop.is_cancelled()
    }
}

// === impl Control ===

impl Control {
    fn request_stop(&self, request: StopRequest) {
        if let Ok(mut slot) = self.request.lock() {
            slot.get_or_insert(request);
        }
        self.stop.cancel();
    }

    /// Waits until a stop is requested and returns the request.
    pub(crate) async fn stopped(&self) -> StopRequest {
        self.stop.cancelled().await;
        self.request().unwrap_or(StopRequest {
            reason: ReasonCode::UNSPECIFIED_ERROR,
            server_reference: None,
        })
    }

    fn request(&self) -> Option<StopRequest> {
        self.request.lock().ok().and_then(|slot| slot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> ConnectionHandle {
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        ConnectionHandle::new(
            ConnectionId(7),
            ClientId::new("GID_a@@@1"),
            Some("Signature|LTAItest|hz01".to_owned()),
            ProtocolVersion::V5,
            Origin::Global {
                group: "global".to_owned(),
            },
            peer,
        )
    }

    #[test]
    fn origin_displays_group() {
        assert_eq!(Origin::Region.to_string(), "region");
        assert_eq!(
            Origin::Global {
                group: "g1".to_owned()
            }
            .to_string(),
            "global:g1"
        );
    }

    #[tokio::test]
    async fn first_disconnect_reason_wins() {
        let handle = handle();
        handle.disconnect(ReasonCode::USE_ANOTHER_SERVER);
        handle.clone().disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        assert_eq!(
            handle.control().stopped().await.reason,
            ReasonCode::USE_ANOTHER_SERVER
        );
        assert_eq!(handle.client_id(), "GID_a@@@1");
        assert_eq!(handle.username(), Some("Signature|LTAItest|hz01"));
        assert!(handle.is_closing());
        assert_eq!(handle.protocol(), ProtocolVersion::V5);
        assert_eq!(handle.id(), ConnectionId(7));
    }

    #[tokio::test]
    async fn disconnect_with_reference_keeps_reference() {
        let handle = handle();
        let reference = Some("mqtt-sh.example.com:1883".to_owned());
        handle.disconnect_with_reference(ReasonCode::SERVER_MOVED, reference.clone());
        handle.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        let request = handle.control().stopped().await;
        assert_eq!(request.reason, ReasonCode::SERVER_MOVED);
        assert_eq!(request.server_reference, reference);
    }
}
