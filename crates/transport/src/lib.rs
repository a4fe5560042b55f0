//! Listener transports of Switchyard: plain TCP, MQTT over TLS, over WebSocket and over secure
//! WebSocket, for the region listeners of instances and for DR global endpoints alike.
//!
//! A listener builds one [`TransportAcceptor`]. Its accept loop hands every accepted
//! `TcpStream` to [`TransportAcceptor::accept`] on the connection's own task. That call runs the
//! TLS and WebSocket handshakes under a deadline. It returns an [`AcceptedStream`], which the
//! MQTT code reads like any byte stream, and the [`ConnectionInfo`] the handshakes established,
//! such as the client certificate.
//!
//! # Layout
//!
//! - `tls`: PEM certificates and keys read from files ([`load_server_config`]), the rustls
//!   `ServerConfig` with or without client-certificate verification, and [`ClientCertificate`].
//! - `websocket`: the checks on the HTTP upgrade (path, subprotocol `mqtt`) and
//!   [`WebSocketByteStream`], the adapter from WebSocket messages to a byte stream.
//! - `acceptor`: [`TransportAcceptor`], [`AcceptedStream`] and [`ConnectionInfo`].
//! - `testing` (feature `test-util`): a throwaway PKI and client helpers for tests.

mod acceptor;
mod tls;
mod websocket;

#[cfg(feature = "test-util")]
pub mod testing;

pub use acceptor::{
    Accepted, AcceptedStream, BoxedStream, ByteStream, ConnectionInfo, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_WEBSOCKET_MESSAGE_SIZE, HandshakeError, Transport, TransportAcceptor,
};
pub use tls::{
    ClientCertificate, FileRole, ServerConfigError, TlsConfigError, TlsFiles, crypto_provider,
    load_certificates, load_client_roots, load_private_key, load_server_config, server_config,
};
pub use websocket::{
    DEFAULT_WEBSOCKET_PATH, MQTT_SUBPROTOCOLS, WebSocketByteStream, negotiate_upgrade,
};

/// The rustls version this crate builds on, re-exported so that callers name the same types.
pub use rustls;
