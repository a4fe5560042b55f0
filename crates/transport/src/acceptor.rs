//! [`TransportAcceptor`]: the per-listener step between `accept()` and MQTT. It runs the TLS
//! and WebSocket handshakes of one connection under a deadline and returns a byte stream with
//! what the handshakes learned about the client.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

use crate::tls::ClientCertificate;
use crate::websocket::{DEFAULT_WEBSOCKET_PATH, WebSocketByteStream, negotiate_upgrade};

/// Time a client has to finish the TLS and WebSocket handshakes unless the listener sets
/// another with [`TransportAcceptor::with_handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest WebSocket message, and frame, accepted unless the listener sets another with
/// [`TransportAcceptor::with_max_websocket_message_size`]: 1 MiB, in bytes.
pub const DEFAULT_MAX_WEBSOCKET_MESSAGE_SIZE: usize = 1024 * 1024;

/// Capacity of tungstenite's read buffer, which it allocates for every connection up front.
/// Its default of 128 KiB would cost 12.8 GB for 100,000 idle devices.
const WEBSOCKET_READ_BUFFER_SIZE: usize = 4096;

/// The listener protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Returns the protocol name used in the configuration file: `tcp`, `tls`, `ws` or `wss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Reports whether the transport runs over TLS (`tls` and `wss`).
    pub fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Reports whether the transport carries MQTT in WebSocket frames (`ws` and `wss`).
    pub fn uses_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(name: &str) -> Result<Transport, String> {
        match name {
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            "ws" => Ok(Transport::Ws),
            "wss" => Ok(Transport::Wss),
            other => Err(format!(
                "listener protocol {other:?} is invalid; use tcp, tls, ws or wss"
            )),
        }
    }
}

/// A byte stream that a connection task can own: what every transport reduces to.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> ByteStream for T {}

/// A TLS or WebSocket stream behind one pointer, so that code taking it is compiled once for
/// every such transport.
pub type BoxedStream = Box<dyn ByteStream>;

/// The stream of an accepted connection.
///
/// Plain TCP stays a [`TcpStream`], so code that is generic over the stream can handle it
/// without a virtual call per read and write; [`AcceptedStream`] itself also implements
/// `AsyncRead` and `AsyncWrite` for callers that do not care.
pub enum AcceptedStream {
    Tcp(TcpStream),
    Boxed(BoxedStream),
}

impl fmt::Debug for AcceptedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptedStream::Tcp(stream) => f.debug_tuple("Tcp").field(stream).finish(),
            AcceptedStream::Boxed(_) => f.write_str("Boxed(..)"),
        }
    }
}

impl AsyncRead for AcceptedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            AcceptedStream::Boxed(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AcceptedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AcceptedStream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            AcceptedStream::Boxed(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AcceptedStream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            AcceptedStream::Boxed(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AcceptedStream::Tcp(stream) => stream.is_write_vectored(),
            AcceptedStream::Boxed(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            AcceptedStream::Boxed(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            AcceptedStream::Boxed(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// Details of a connection that its transport handshakes established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub transport: Transport,
    /// Address of the client.
    pub peer: SocketAddr,
    /// Local address the connection arrived on, when the socket could report it.
    pub local: Option<SocketAddr>,
    /// Server name (SNI) the client sent in its TLS ClientHello, for `tls` and `wss`.
    pub server_name: Option<String>,
    /// The client certificate, verified against the listener's `client_ca`. Only listeners
    /// with a `client_ca` request one.
    pub client_certificate: Option<ClientCertificate>,
    /// The WebSocket subprotocol agreed on, for `ws` and `wss`.
    pub websocket_subprotocol: Option<&'static str>,
}

/// A connection whose transport handshakes are done, ready for MQTT.
#[derive(Debug)]
pub struct Accepted {
    pub stream: AcceptedStream,
    pub info: ConnectionInfo,
}

/// A failed transport handshake. The connection is closed when the error is returned.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("timed out after {timeout:?} waiting for the {transport} handshake")]
    TimedOut {
        transport: Transport,
        timeout: Duration,
    },
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(#[source] WsError),
}

/// Turns accepted TCP connections of one listener into MQTT byte streams.
///
/// It is cheap to clone: the TLS settings are shared. Call [`accept`](Self::accept) on the
/// connection's own task, never in the accept loop, so one slow client cannot hold up others.
#[derive(Clone)]
pub struct TransportAcceptor {
    kind: Kind,
    handshake_timeout: Duration,
    websocket_config: WebSocketConfig,
}

#[derive(Clone)]
enum Kind {
    Tcp,
    Tls(TlsAcceptor),
    Ws { path: Arc<str> },
    Wss { tls: TlsAcceptor, path: Arc<str> },
}

impl fmt::Debug for TransportAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportAcceptor")
            .field("transport", &self.transport())
            .field("websocket_path", &self.websocket_path())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TransportAcceptor {
    /// Plain TCP: no handshake.
    pub fn tcp() -> TransportAcceptor {
        TransportAcceptor::with_kind(Kind::Tcp)
    }

    /// MQTT over TLS.
    pub fn tls(config: Arc<ServerConfig>) -> TransportAcceptor {
        TransportAcceptor::with_kind(Kind::Tls(TlsAcceptor::from(config)))
    }

    /// MQTT over WebSocket, served at `path`, or at [`DEFAULT_WEBSOCKET_PATH`] for `None`.
    pub fn websocket(path: Option<&str>) -> TransportAcceptor {
        let path = Arc::from(path.unwrap_or(DEFAULT_WEBSOCKET_PATH));
        TransportAcceptor::with_kind(Kind::Ws { path })
    }

    /// MQTT over WebSocket over TLS, served at `path`, or at [`DEFAULT_WEBSOCKET_PATH`].
    pub fn secure_websocket(config: Arc<ServerConfig>, path: Option<&str>) -> TransportAcceptor {
        let path = Arc::from(path.unwrap_or(DEFAULT_WEBSOCKET_PATH));
        let tls = TlsAcceptor::from(config);
        TransportAcceptor::with_kind(Kind::Wss { tls, path })
    }

    fn with_kind(kind: Kind) -> TransportAcceptor {
        let websocket_config = WebSocketConfig::default()
            .read_buffer_size(WEBSOCKET_READ_BUFFER_SIZE)
            // The byte stream flushes after every batch, so buffering writes saves nothing.
            .write_buffer_size(0)
            .max_message_size(Some(DEFAULT_MAX_WEBSOCKET_MESSAGE_SIZE))
            .max_frame_size(Some(DEFAULT_MAX_WEBSOCKET_MESSAGE_SIZE));
        TransportAcceptor {
            kind,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            websocket_config,
        }
    }

    /// Sets the time a client has for the TLS and WebSocket handshakes together.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TransportAcceptor {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the largest WebSocket message, and frame, a client may send, in bytes. A larger one
    /// closes the connection.
    pub fn with_max_websocket_message_size(mut self, bytes: usize) -> TransportAcceptor {
        self.websocket_config = self
            .websocket_config
            .max_message_size(Some(bytes))
            .max_frame_size(Some(bytes));
        self
    }

    pub fn transport(&self) -> Transport {
        match self.kind {
            Kind::Tcp => Transport::Tcp,
            Kind::Tls(_) => Transport::Tls,
            Kind::Ws { .. } => Transport::Ws,
            Kind::Wss { .. } => Transport::Wss,
        }
    }

    /// Returns the WebSocket path, for `ws` and `wss`.
    pub fn websocket_path(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ws { path } | Kind::Wss { path, .. } => Some(path),
            Kind::Tcp | Kind::Tls(_) => None,
        }
    }

    /// Runs the transport handshakes on an accepted connection, within the handshake timeout,
    /// and returns the stream that carries MQTT. It also turns off Nagle's algorithm, because
    /// MQTT packets are small and their latency matters.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<Accepted, HandshakeError> {
        let _ = stream.set_nodelay(true);
        let mut info = ConnectionInfo {
            transport: self.transport(),
            peer,
            local: stream.local_addr().ok(),
            server_name: None,
            client_certificate: None,
            websocket_subprotocol: None,
        };
        if let Kind::Tcp = self.kind {
            let stream = AcceptedStream::Tcp(stream);
            return Ok(Accepted { stream, info });
        }

        let handshake = self.handshake(stream, &mut info);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => {
                let stream = AcceptedStream::Boxed(stream);
                Ok(Accepted { stream, info })
            }
            Ok(Err(err)) => Err(err),
            Err(_elapsed) => Err(HandshakeError::TimedOut {
                transport: self.transport(),
                timeout: self.handshake_timeout,
            }),
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        info: &mut ConnectionInfo,
    ) -> Result<BoxedStream, HandshakeError> {
        match &self.kind {
            Kind::Tcp => Ok(Box::new(stream)),
            Kind::Tls(tls) => {
                let stream = tls.accept(stream).await.map_err(HandshakeError::Tls)?;
                record_tls(&stream, info);
                Ok(Box::new(stream))
            }
            Kind::Ws { path } => {
                let stream = self.upgrade(stream, path, info).await?;
                Ok(Box::new(WebSocketByteStream::new(stream)))
            }
            Kind::Wss { tls, path } => {
                let stream = tls.accept(stream).await.map_err(HandshakeError::Tls)?;
                record_tls(&stream, info);
                let stream = self.upgrade(stream, path, info).await?;
                Ok(Box::new(WebSocketByteStream::new(stream)))
            }
        }
    }

    #[allow(
        clippy::result_large_err,
        reason = "the callback returns tungstenite's ErrorResponse, as its Callback trait requires"
    )]
    async fn upgrade<S>(
        &self,
        stream: S,
        path: &str,
        info: &mut ConnectionInfo,
    ) -> Result<WebSocketStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut subprotocol = None;
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            let (response, chosen) = negotiate_upgrade(request, response, path)?;
            subprotocol = Some(chosen);
            Ok(response)
        };
        let config = Some(self.websocket_config);
        let stream = accept_hdr_async_with_config(stream, callback, config)
            .await
            .map_err(HandshakeError::WebSocket)?;
        info.websocket_subprotocol = subprotocol;
        Ok(stream)
    }
}

fn record_tls(stream: &TlsStream<TcpStream>, info: &mut ConnectionInfo) {
    let (_, connection) = stream.get_ref();
    info.server_name = connection.server_name().map(str::to_owned);
    info.client_certificate = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| ClientCertificate::from_der(leaf.clone().into_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for transport in [
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ] {
            assert_eq!(transport.as_str().parse::<Transport>(), Ok(transport));
        }
    }

    #[test]
    fn unknown_transport_is_named() {
        let err = "quic"
            .parse::<Transport>()
            .expect_err("quic is not a transport");
        assert!(err.contains("\"quic\""), "{err}");
        assert!(err.contains("tcp, tls, ws or wss"), "{err}");
    }

    #[test]
    fn websocket_path_defaults_to_mqtt() {
        assert_eq!(
            TransportAcceptor::websocket(None).websocket_path(),
            Some("/mqtt")
        );
        let custom = TransportAcceptor::websocket(Some("/devices"));
        assert_eq!(custom.websocket_path(), Some("/devices"));
        assert_eq!(TransportAcceptor::tcp().websocket_path(), None);
    }
}
