//! The global endpoint of a DR group: reads each device's CONNECT, chooses a member and hands
//! the connection to it, with the CONNECT already decoded so the member does not parse it again.
//! A persistent-session CONNECT also carries a [`GroupHandover`], so the device's offline
//! session on another member follows it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::{
    Origin, ReadConnectError, linger_close, read_connect, write_connack_refusal,
};
use switchyard_codec::ReasonCode;
use switchyard_transport::{AcceptedStream, TransportAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::handover::GroupHandover;
use crate::members::Group;
use crate::routing::{Route, choose_member, named_instance};

/// Accepts devices over plain TCP on one listener of a group's global endpoint until
/// `shutdown` fires; [`serve_with`] with [`TransportAcceptor::tcp`].
pub async fn serve(group: Arc<Group>, listener: TcpListener, shutdown: CancellationToken) {
    serve_with(
        group,
        listener,
        Arc::new(TransportAcceptor::tcp()),
        shutdown,
    )
    .await;
}

/// Accepts devices on one listener of a group's global endpoint, with the transport of
/// `acceptor`, until `shutdown` fires.
///
/// Each connection's TLS or WebSocket handshake runs on the connection's own task, under the
/// acceptor's handshake timeout, before its CONNECT is read and routed.
pub async fn serve_with(
    group: Arc<Group>,
    listener: TcpListener,
    acceptor: Arc<TransportAcceptor>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let transport = acceptor.transport();
    info!(group = %group.id(), addr = ?local, %transport, "Global endpoint listening");
    let mut backoff = Duration::from_millis(10);

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let acceptor = Arc::clone(&acceptor);
                tokio::spawn(accept_connection(group.clone(), acceptor, stream, peer));
            }
            Err(err) if is_connection_error(&err) => {
                debug!(error = %err, "Connection failed before it was accepted");
            }
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                error!(group = %group.id(), error = %err, ?backoff, "Failed to accept a connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    info!(group = %group.id(), addr = ?local, "Global endpoint stopped");
}

/// Runs the transport handshake of one device, then routes it.
async fn accept_connection(
    group: Arc<Group>,
    acceptor: Arc<TransportAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let accepted = match acceptor.accept(stream, peer).await {
        Ok(accepted) => accepted,
        Err(err) => {
            debug!(group = %group.id(), %peer, error = %err, "Transport handshake failed");
            return;
        }
    };
    // Plain TCP keeps its concrete type, so its reads and writes stay direct calls.
    match accepted.stream {
        AcceptedStream::Tcp(stream) => route_connection(group, stream, peer).await,
        AcceptedStream::Boxed(stream) => route_connection(group, stream, peer).await,
    }
}

/// Reads the CONNECT of one device and hands the connection to the chosen member.
async fn route_connection<S>(group: Arc<Group>, mut stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = &group.settings;
    let read = read_connect(
        &mut stream,
        settings.connect_timeout,
        settings.max_connect_bytes,
    );
    let (connect, buffered) = match read.await {
        Ok(read) => read,
        Err(err) => {
            reject_unreadable_connect(&mut stream, peer, &group, err).await;
            return;
        }
    };

    let named = named_instance(connect.username.as_deref());
    let views = group.views();
    let route = choose_member(&views, named, &connect.client_id, settings.fallback);
    let chosen = match route {
        Route::Named(id) | Route::Fallback(id) => group.member(id),
        Route::Unavailable => None,
    };
    let Some(member) = chosen else {
        info!(
            group = %group.id(),
            client_id = %connect.client_id,
            %peer,
            "No member can take the device; answering server unavailable"
        );
        let refusal = ReasonCode::SERVER_UNAVAILABLE;
        if write_connack_refusal(&mut stream, connect.protocol, refusal)
            .await
            .is_ok()
        {
            linger_close(&mut stream).await;
        }
        return;
    };

    debug!(
        group = %group.id(),
        client_id = %connect.client_id,
        member = %member.id(),
        fallback = matches!(route, Route::Fallback(_)),
        "Routing device"
    );
    let origin = Origin::Global {
        group: group.id().to_owned(),
    };
    if connect.clean_start {
        member
            .instance
            .accept_connection(stream, peer, connect, buffered, origin);
        return;
    }
    // A persistent session may wait on another member, where the device was before a
    // switchover. The chosen member takes it over once it has admitted the device.
    let handover = Arc::new(GroupHandover::new(Arc::clone(&group), member.id()));
    member
        .instance
        .accept_connection_with_handover(stream, peer, connect, buffered, origin, handover);
}

/// Answers a CONNECT that could not be read: with a CONNACK where the protocol version is known
/// and the error has a reason to send, otherwise by closing.
async fn reject_unreadable_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    group: &Group,
    err: ReadConnectError,
) {
    debug!(group = %group.id(), %peer, error = %err, "Rejected connection before routing");
    if let Some((version, reason)) = err.refusal()
        && write_connack_refusal(stream, version, reason).await.is_ok()
    {
        linger_close(stream).await;
    }
}

fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
