//! The region listener of an instance: the accept loop, and for each connection the transport
//! handshake (TLS, WebSocket) and the CONNECT read.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_transport::{AcceptedStream, TransportAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::connection::Origin;
use crate::handshake::{read_connect, write_connack_refusal};
use crate::instance::Instance;
use crate::linger::linger_close;

/// First pause after an accept error that is not about one connection; it doubles on each
/// further error up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl Instance {
    /// Accepts plain TCP connections on `listener` until `shutdown` fires or the instance
    /// shuts down; [`serve_with`](Self::serve_with) with [`TransportAcceptor::tcp`].
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let acceptor = Arc::new(TransportAcceptor::tcp());
        self.serve_with(listener, acceptor, shutdown).await;
    }

    /// Accepts connections on `listener` with the transport of `acceptor` until `shutdown`
    /// fires or the instance shuts down.
    ///
    /// The loop only accepts and spawns. Each connection's transport handshake runs on its own
    /// task under the acceptor's handshake timeout, and then its CONNECT is read under
    /// [`InstanceSettings::connect_timeout`](crate::InstanceSettings::connect_timeout) and
    /// [`InstanceSettings::max_packet_size`](crate::InstanceSettings::max_packet_size).
    /// Accept errors about a single connection are skipped. Others, such as running out of
    /// file descriptors, pause the loop with a growing backoff instead of spinning.
    pub async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: Arc<TransportAcceptor>,
        shutdown: CancellationToken,
    ) {
        let addr = listener.local_addr().ok();
        let transport = acceptor.transport();
        info!(instance = %self.id(), ?addr, %transport, "Region listener started");
        let mut backoff = FIRST_ACCEPT_BACKOFF;

        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.stopping().cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = FIRST_ACCEPT_BACKOFF;
                    let instance = Arc::clone(&self);
                    let acceptor = Arc::clone(&acceptor);
                    self.tasks()
                        .spawn(handshake(instance, acceptor, stream, peer));
                }
                Err(err) if is_connection_error(&err) => {
                    debug!(error = %err, "Connection failed before it was accepted");
                }
                Err(err) => {
                    error!(instance = %self.id(), error = %err, ?backoff, "Failed to accept a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
        info!(instance = %self.id(), ?addr, "Region listener stopped");
    }
}

/// Runs the transport handshake of a region connection, then reads its CONNECT.
async fn handshake(
    instance: Arc<Instance>,
    acceptor: Arc<TransportAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let accepted = tokio::select! {
        () = instance.stopping().cancelled() => return,
        accepted = acceptor.accept(stream, peer) => accepted,
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(err) => {
            debug!(instance = %instance.id(), %peer, error = %err, "Transport handshake failed");
            return;
        }
    };
    if let Some(certificate) = &accepted.info.client_certificate {
        debug!(
            instance = %instance.id(),
            %peer,
            subject = %certificate.subject,
            fingerprint = %certificate.sha256_fingerprint,
            "Client presented a certificate"
        );
    }
    // Plain TCP keeps its concrete type, so its reads and writes stay direct calls.
    match accepted.stream {
        AcceptedStream::Tcp(stream) => read_connect_and_accept(instance, stream, peer).await,
        AcceptedStream::Boxed(stream) => read_connect_and_accept(instance, stream, peer).await,
    }
}

/// Reads the CONNECT of a region connection and hands the connection to the instance, or
/// rejects an unreadable CONNECT and closes.
async fn read_connect_and_accept<S>(instance: Arc<Instance>, mut stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = instance.settings();
    let read = read_connect(
        &mut stream,
        settings.connect_timeout,
        settings.max_packet_size,
    );
    let read = tokio::select! {
        () = instance.stopping().cancelled() => return,
        read = read => read,
    };
    match read {
        Ok((connect, buffered)) => {
            instance.accept_connection(stream, peer, connect, buffered, Origin::Region);
        }
        Err(err) => {
            debug!(instance = %instance.id(), %peer, error = %err, "Rejected unreadable CONNECT");
            if let Some((version, reason)) = err.refusal() {
                let write = write_connack_refusal(&mut stream, version, reason);
                if let Ok(Ok(())) = tokio::time::timeout(settings.connect_timeout, write).await {
                    linger_close(&mut stream).await;
                }
            }
        }
    }
}

fn is_connection_error(err: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
