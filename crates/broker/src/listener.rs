//! The region listener of an instance: the accept loop and the CONNECT read of each connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::connection::Origin;
use crate::handshake::{read_connect, write_connack_refusal};
use crate::instance::Instance;

/// First pause after an accept error that is not about one connection; it doubles on each
/// further error up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl Instance {
    /// Accepts connections on `listener` until `shutdown` fires or the instance shuts down.
    ///
    /// The loop only accepts and spawns: each connection's CONNECT is read on its own task,
    /// under [`InstanceSettings::connect_timeout`](crate::InstanceSettings::connect_timeout)
    /// and [`InstanceSettings::max_packet_size`](crate::InstanceSettings::max_packet_size).
    /// Accept errors about a single connection are skipped. Others, such as running out of
    /// file descriptors, pause the loop with a growing backoff instead of spinning.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let addr = listener.local_addr().ok();
        info!(instance = %self.id(), ?addr, "Region listener started");
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
                    self.tasks().spawn(handshake(instance, stream, peer));
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

/// Reads the CONNECT of a region connection and hands the connection to the instance, or
/// rejects an unreadable CONNECT and closes.
async fn handshake(instance: Arc<Instance>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
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
                let _ = tokio::time::timeout(settings.connect_timeout, write).await;
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
