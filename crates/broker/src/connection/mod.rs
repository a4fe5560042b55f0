//! The connection driver: one task per client that authenticates the CONNECT, sends CONNACK,
//! then reads and handles packets until the connection ends.
//!
//! Each connection runs two tasks. This one reads: it decodes packets, calls the session state
//! machine and the instance, and passes its replies (PUBACK, SUBACK, PINGRESP, ...) to the
//! writer over a bounded channel, so a client that stops reading also stops being read. The
//! writer task (see `writer`) owns the write half and sends those replies and whatever the
//! session has to send, batched into one write per wake-up.
//!
//! The reader does not wait for the store write of a QoS 1 or 2 PUBLISH. It keeps the write in
//! `acks` and reads on, and sends the PUBACK or PUBREC once the write has completed, in the
//! order the PUBLISH packets arrived. It stops reading while as many replies are pending as
//! the Receive Maximum the server announces, a bound it applies to 3.x clients too, and reads
//! on once the oldest is sent.
//!
//! A connection ends when the client disconnects or breaks a rule, when its keep-alive expires,
//! or when a [`ConnectionHandle`] requests a stop (takeover, DR downgrade, shutdown). MQTT 5.0
//! clients are then sent a DISCONNECT with the reason when the server ends the connection.

mod acks;
mod handle;
mod inbound;
mod writer;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_codec::{
    ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode,
    decode_packet, encode_packet,
};
use switchyard_store::StoreFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, field, info, info_span};

pub use handle::{ConnectionHandle, Origin};

use crate::auth::{Access, Identity};
use crate::handshake::{READ_CHUNK, write_connack_refusal};
use crate::ids::{ClientId, ConnectionId};
use crate::instance::{DetachedSession, Instance, SessionHandover, SessionSlot};
use crate::negotiate::{Negotiated, connack_properties, negotiate};
use crate::rate::RateLimiter;
use crate::session::{Link, Session};
use crate::topic_alias::InboundAliases;
use crate::will::WillMessage;
use acks::PendingAcks;
use handle::StopRequest;
use writer::{OutboundRules, Outgoing};

/// Replies the reader may queue for the writer before it waits. The limit bounds the memory that
/// a client which sends without reading can make the server use.
const OUTGOING_CAPACITY: usize = 64;

/// How long a closing connection may spend flushing its last packets and DISCONNECT.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection whose CONNECT was already read, until it ends. `handover`, when
/// given, is asked for the session of a client that this instance has none of.
pub(crate) async fn run<S>(
    instance: Arc<Instance>,
    stream: S,
    peer: SocketAddr,
    connect: Connect,
    buffered: BytesMut,
    origin: Origin,
    handover: Option<Arc<dyn SessionHandover>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!(
        "connection",
        instance = %instance.id(),
        %peer,
        %origin,
        client_id = field::Empty,
    );
    serve(instance, stream, peer, connect, buffered, origin, handover)
        .instrument(span)
        .await;
}

/// The cause of a connection's end.
#[derive(Debug)]
enum Close {
    /// The client sent DISCONNECT with this reason.
    Disconnected(ReasonCode),
    /// The client closed the connection without DISCONNECT.
    PeerClosed,
    ReadFailed(io::Error),
    /// The writer task ended, because a write failed.
    WriterStopped,
    /// No packet arrived within 1.5 times the keep-alive interval.
    KeepAliveExpired,
    /// The client sent something invalid, and 5.0 clients get DISCONNECT `reason`.
    Violation {
        reason: ReasonCode,
        detail: String,
    },
    /// A [`ConnectionHandle`] asked the connection to stop.
    Requested(StopRequest),
    /// Another connection took the session over while this one was using it.
    SessionLost,
}

/// The state of a connection after its CONNACK.
struct Connection {
    instance: Arc<Instance>,
    handle: ConnectionHandle,
    identity: Identity,
    client_id: ClientId,
    id: ConnectionId,
    version: ProtocolVersion,
    slot: Arc<SessionSlot>,
    /// Session Expiry Interval the CONNECT asked for, which limits what DISCONNECT may set.
    requested_session_expiry: u32,
    keep_alive: u16,
    /// Topic Aliases the client set on this connection (MQTT 5.0).
    inbound_aliases: InboundAliases,
    /// PUBLISH packets per second, limited by `max_publish_rate`.
    publish_rate: RateLimiter,
    outgoing: mpsc::Sender<Outgoing>,
    /// Replies to PUBLISH packets that wait for a store write or for an earlier reply.
    pending_acks: PendingAcks,
    /// Set once a failed store write ended a 3.x connection. The replies to later PUBLISH
    /// packets are then not sent, as if the connection had closed at that write.
    acks_stopped: bool,
}

/// Authenticates, opens the session, sends CONNACK and runs the connection.
async fn serve<S>(
    instance: Arc<Instance>,
    mut stream: S,
    peer: SocketAddr,
    connect: Connect,
    buffered: BytesMut,
    origin: Origin,
    handover: Option<Arc<dyn SessionHandover>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let version = connect.protocol;
    let Some((identity, negotiated)) = admit(&instance, &mut stream, &connect, peer).await else {
        return;
    };
    tracing::Span::current().record("client_id", negotiated.client_id.as_str());
    let adopted = match handover {
        Some(handover) => take_handed_over(&instance, &connect, &negotiated, &*handover).await,
        None => None,
    };

    // Register the handle before taking the session, so a takeover racing with this CONNECT
    // can already find and close this connection.
    let id = instance.next_connection_id();
    let username = connect
        .username
        .as_ref()
        .map(|name| name.as_str().to_owned());
    let handle = ConnectionHandle::new(
        id,
        negotiated.client_id.clone(),
        username,
        version,
        origin.clone(),
        peer,
    );
    instance.register(handle.clone());
    let link = Link {
        version,
        window: negotiated.outbound_window,
        max_packet_size: negotiated.client_max_packet_size,
    };
    let will = connect
        .will
        .as_ref()
        .map(|will| WillMessage::from_connect(will, version));
    let now = tokio::time::Instant::now().into_std();
    let opened = instance.open_session(
        &negotiated,
        connect.clean_start,
        id,
        link,
        will,
        &origin,
        adopted,
        now,
    );
    info!(
        instance = %instance.id(),
        client_id = %negotiated.client_id,
        %origin,
        principal = %identity.principal,
        protocol = ?version,
        session_present = opened.session_present,
        keep_alive = negotiated.keep_alive,
        "Client connected"
    );

    // A persistent session is in the store before the client learns it exists.
    let purpose = "open session";
    let _ = crate::persist::wait_logged(opened.store_write, instance.id(), purpose).await;

    // CONNACK goes first in the writer's first batch, before any resent message.
    let rules = OutboundRules {
        version,
        max_packet_size: negotiated.client_max_packet_size,
        problem_information: negotiated.problem_information,
        topic_alias_maximum: negotiated.outbound_topic_alias_maximum,
    };
    let mut first_batch = BytesMut::new();
    let mut connack = connack(&instance, &negotiated, version, opened.session_present);
    if !rules.fit(&mut connack) {
        // NOTE: the CONNACK is sent over the client's Maximum Packet Size anyway, because a
        // client that cannot take the smallest CONNACK can use no connection at all.
        debug!(max_packet_size = ?rules.max_packet_size, "CONNACK exceeds the client's Maximum Packet Size");
    }
    encode_packet(&connack, version, &mut first_batch);

    let (mut read_half, write_half) = tokio::io::split(stream);
    let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
    let slot = Arc::clone(&opened.slot);
    let inbound_aliases = InboundAliases::new(if version.is_v5() {
        instance.settings().topic_alias_maximum
    } else {
        0
    });
    let store = instance.store().cloned();
    let mut writer = tokio::spawn(
        writer::run(write_half, slot, id, rules, outgoing_rx, first_batch, store).in_current_span(),
    );
    let publish_rate = RateLimiter::new(instance.settings().max_publish_rate, now);
    let pending_acks = PendingAcks::new(usize::from(instance.settings().receive_maximum));
    let mut connection = Connection {
        instance,
        handle,
        identity,
        client_id: negotiated.client_id.clone(),
        id,
        version,
        slot: opened.slot,
        requested_session_expiry: connect.properties.session_expiry_interval.unwrap_or(0),
        keep_alive: negotiated.keep_alive,
        inbound_aliases,
        publish_rate,
        outgoing,
        pending_acks,
        acks_stopped: false,
    };
    let close = connection
        .read_loop(&mut read_half, buffered, &mut writer)
        .await;
    let drain = close.server_initiated();
    connection.finish(close, writer).await;
    // The writer shut down the write side after the last packet. The session is already
    // detached, so the drain delays nothing but the socket's close.
    if drain {
        crate::linger::drain_input(&mut read_half).await;
    }
}

/// Checks that the instance takes connections, then authenticates and negotiates the CONNECT.
/// Returns `None` after sending the CONNACK that rejects the CONNECT.
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    instance: &Instance,
    stream: &mut S,
    connect: &Connect,
    peer: SocketAddr,
) -> Option<(Identity, Negotiated)> {
    if instance.is_stopping() {
        refuse(stream, connect, ReasonCode::SERVER_UNAVAILABLE).await;
        return None;
    }
    let now = tokio::time::Instant::now().into_std();
    if let Err(reason) = instance.check_admission(&connect.client_id, now) {
        // The instance logged the rejection, rate-limited.
        write_refusal(stream, connect, reason).await;
        return None;
    }
    let auth = instance.authenticator();
    let mut identity = match auth.authenticate(connect, peer) {
        Ok(identity) => identity,
        Err(reason) => {
            refuse(stream, connect, reason).await;
            return None;
        }
    };
    let negotiated = match negotiate(connect, instance.settings(), || instance.assign_client_id()) {
        Ok(negotiated) => negotiated,
        Err(reason) => {
            refuse(stream, connect, reason).await;
            return None;
        }
    };
    // Access rules may name the client id, so they see the assigned one.
    identity.client_id = negotiated.client_id.as_str().to_owned();

    // The will is published under the client's name later, so its topic is authorized now,
    // like a PUBLISH.
    if let Some(will) = &connect.will
        && let Err(reason) = auth.authorize(&identity, Access::Publish, &will.topic)
    {
        info!(
            client_id = %connect.client_id,
            topic = %will.topic,
            principal = %identity.principal,
            "Will topic not authorized"
        );
        refuse(stream, connect, reason).await;
        return None;
    }
    if let Some(will) = &connect.will
        && let Err(problem) = instance.settings().check_topic(&will.topic)
    {
        info!(client_id = %connect.client_id, topic = %will.topic, problem, "Will topic rejected");
        refuse(stream, connect, ReasonCode::TOPIC_NAME_INVALID).await;
        return None;
    }
    Some((identity, negotiated))
}

/// Asks `handover` for the session of a persistent-session CONNECT whose client this instance
/// has no session of. A client that sent no client identifier got a new one, which no other
/// instance can have a session of.
async fn take_handed_over(
    instance: &Instance,
    connect: &Connect,
    negotiated: &Negotiated,
    handover: &dyn SessionHandover,
) -> Option<DetachedSession> {
    let client_id = negotiated.client_id.as_str();
    if connect.clean_start || connect.client_id.is_empty() || instance.has_session(client_id) {
        return None;
    }
    let adopted = handover.take_session(client_id).await?;
    info!(
        instance = %instance.id(),
        client_id,
        subscriptions = adopted.subscription_count(),
        queued = adopted.queued_len(),
        inflight = adopted.inflight_len(),
        "Session handed over from another instance"
    );
    Some(adopted)
}

/// Logs the rejection of `connect` and sends the CONNACK with `reason`.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    connect: &Connect,
    reason: ReasonCode,
) {
    info!(client_id = %connect.client_id, ?reason, "Rejected connection");
    write_refusal(stream, connect, reason).await;
}

/// Sends the CONNACK that rejects `connect` with `reason`, within [`CLOSE_TIMEOUT`], and
/// closes with a linger so that a client still writing can read it.
async fn write_refusal<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    connect: &Connect,
    reason: ReasonCode,
) {
    let write = write_connack_refusal(stream, connect.protocol, reason);
    match tokio::time::timeout(CLOSE_TIMEOUT, write).await {
        Ok(Ok(())) => crate::linger::linger_close(stream).await,
        Ok(Err(error)) => debug!(%error, "Failed to send CONNACK refusal"),
        Err(_elapsed) => debug!("Timed out sending CONNACK refusal"),
    }
}

fn connack(
    instance: &Instance,
    negotiated: &Negotiated,
    version: ProtocolVersion,
    session_present: bool,
) -> Packet {
    let properties = if version.is_v5() {
        connack_properties(negotiated, instance.settings())
    } else {
        Default::default()
    };
    Packet::ConnAck(ConnAck {
        session_present,
        reason: ReasonCode::SUCCESS,
        properties,
    })
}

// === impl Connection ===

impl Connection {
    /// Reads and handles packets until the connection ends, starting with the bytes that came
    /// after the CONNECT.
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        mut buf: BytesMut,
        writer: &mut JoinHandle<io::Result<()>>,
    ) -> Close {
        // The server closes a connection that sends nothing for 1.5 times the keep-alive
        // interval [MQTT-3.1.2-24 in 3.1.1, MQTT-3.1.2-22 in 5.0].
        let keep_alive =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let mut deadline = keep_alive.map(|timeout| tokio::time::Instant::now() + timeout);
        let max_packet_size = self.instance.settings().max_packet_size;

        loop {
            // Handle every whole packet already buffered, unless the pending replies are at
            // their limit: then the client waits until some of them are sent.
            while !self.pending_acks.is_full() {
                let packet = match decode_packet(&mut buf, self.version, max_packet_size) {
                    Ok(Some(packet)) => packet,
                    Ok(None) => break,
                    Err(error) => {
                        let reason = error.reason_code();
                        return Close::Violation {
                            reason,
                            detail: error.to_string(),
                        };
                    }
                };
                deadline = keep_alive.map(|timeout| tokio::time::Instant::now() + timeout);
                if let Err(close) = self.handle_packet(packet).await {
                    return close;
                }
            }

            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            // While reading is paused the client is waiting for the server, so its keep-alive
            // does not run.
            let reading = !self.pending_acks.is_full();
            let sleep_until = deadline.unwrap_or_else(tokio::time::Instant::now);
            let event = tokio::select! {
                request = self.handle.control().stopped() => return Close::Requested(request),
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() && reading => {
                    return Close::KeepAliveExpired;
                }
                _ = &mut *writer => return Close::WriterStopped,
                settled = self.pending_acks.next(), if !self.pending_acks.is_empty() => {
                    ReadEvent::Settled(settled)
                }
                read = reader.read_buf(&mut buf), if reading => ReadEvent::Read(read),
            };
            match event {
                ReadEvent::Settled(Some(settled)) => {
                    if !reading {
                        deadline = keep_alive.map(|timeout| tokio::time::Instant::now() + timeout);
                    }
                    if let Err(close) = self.send_settled(settled).await {
                        return close;
                    }
                }
                ReadEvent::Settled(None) => {}
                ReadEvent::Read(Ok(0)) => return Close::PeerClosed,
                ReadEvent::Read(Ok(_)) => {}
                ReadEvent::Read(Err(error)) => return Close::ReadFailed(error),
            }
        }
    }

    /// Sends the last packets, detaches the session, which publishes the will unless the client
    /// sent DISCONNECT 0x00, and logs the end of the connection.
    ///
    /// The store writes of PUBLISH packets still pending are waited for first, so the
    /// deliveries they hold back are not released before the write completes, and their
    /// replies go out before the DISCONNECT.
    async fn finish(mut self, close: Close, mut writer: JoinHandle<io::Result<()>>) {
        let replies = self.settle_all().await;
        let disconnect = if self.version.is_v5() {
            close.disconnect_packet(self.keep_alive)
        } else {
            None
        };
        if !writer.is_finished() {
            let flush = async {
                let replies_sent = replies.is_empty()
                    || self.outgoing.send(Outgoing::Packets(replies)).await.is_ok();
                if replies_sent
                    && self
                        .outgoing
                        .send(Outgoing::Close(disconnect))
                        .await
                        .is_ok()
                {
                    let _ = (&mut writer).await;
                }
            };
            if tokio::time::timeout(CLOSE_TIMEOUT, flush).await.is_err() {
                debug!("Writer did not finish in time; closing without flushing");
                writer.abort();
            }
        }

        let now = tokio::time::Instant::now().into_std();
        let dropped_total = self.slot.lock().stats().total();
        self.instance
            .close_session(&self.slot, self.id, now, close.publishes_will());
        self.instance.unregister(self.id);
        info!(
            instance = %self.instance.id(),
            client_id = %self.client_id,
            origin = %self.handle.origin(),
            reason = %close,
            dropped_total,
            "Client disconnected"
        );
    }

    /// Queues a reply for the writer, waiting while its channel is full.
    async fn send(&self, packet: Packet) -> Result<(), Close> {
        self.send_outgoing(Outgoing::Packet(packet)).await
    }

    /// Queues a request for the writer, waiting while its channel is full.
    async fn send_outgoing(&self, item: Outgoing) -> Result<(), Close> {
        tokio::select! {
            sent = self.outgoing.send(item) => sent.map_err(|_| Close::WriterStopped),
            request = self.handle.control().stopped() => Err(Close::Requested(request)),
        }
    }

    /// Runs `step` on the session if this connection still owns it.
    fn with_session<T>(&self, step: impl FnOnce(&mut Session) -> T) -> Result<T, Close> {
        let mut session = self.slot.lock();
        if !session.is_owned_by(self.id) {
            return Err(Close::SessionLost);
        }
        Ok(step(&mut session))
    }

    /// Runs `step` like [`Connection::with_session`] and submits the store writes it recorded,
    /// returning the write.
    fn with_stored_session<T>(
        &self,
        step: impl FnOnce(&mut Session) -> T,
    ) -> Result<(T, Option<StoreFuture<()>>), Close> {
        let mut session = self.slot.lock();
        if !session.is_owned_by(self.id) {
            return Err(Close::SessionLost);
        }
        let output = step(&mut session);
        let write = self.instance.submit_session_ops(&mut session);
        Ok((output, write))
    }

    /// Waits for a store write of this connection's session, logging a failure.
    async fn wait_store(&self, write: Option<StoreFuture<()>>, purpose: &str) -> bool {
        crate::persist::wait_logged(write, self.instance.id(), purpose)
            .await
            .is_ok()
    }

    /// Wakes the writer because the session may have packets to send.
    fn wake_writer(&self) {
        self.slot.wake.notify_one();
    }
}

/// An event that wakes the reader while it waits for input.
enum ReadEvent {
    /// The oldest pending reply became due.
    Settled(Option<acks::Settled>),
    Read(io::Result<usize>),
}

// === impl Close ===

impl Close {
    /// Reports whether the server ended the connection while the client may still be writing,
    /// so that the socket lingers after the last packet. A client that closed, sent
    /// DISCONNECT or can no longer be written to gets no linger.
    fn server_initiated(&self) -> bool {
        match self {
            Close::KeepAliveExpired
            | Close::Violation { .. }
            | Close::Requested(_)
            | Close::SessionLost => true,
            Close::Disconnected(_)
            | Close::PeerClosed
            | Close::ReadFailed(_)
            | Close::WriterStopped => false,
        }
    }

    /// Builds the DISCONNECT that a 5.0 client is sent, or `None` when the client ended the
    /// connection itself. It carries the Server Reference of a redirection, and a Reason String
    /// for violations and keep-alive expiry, which MQTT 5.0 allows on DISCONNECT regardless of
    /// Request Problem Information.
    fn disconnect_packet(&self, keep_alive: u16) -> Option<Disconnect> {
        let (reason, reason_string, server_reference) = match self {
            Close::Disconnected(_) | Close::PeerClosed | Close::ReadFailed(_) => return None,
            Close::WriterStopped => return None,
            Close::KeepAliveExpired => {
                let detail =
                    format!("no packet received within 1.5 times the keep-alive of {keep_alive} s");
                (ReasonCode::KEEP_ALIVE_TIMEOUT, Some(detail), None)
            }
            Close::Violation { reason, detail } => (*reason, Some(detail.clone()), None),
            Close::Requested(request) => (request.reason, None, request.server_reference.clone()),
            Close::SessionLost => (ReasonCode::SESSION_TAKEN_OVER, None, None),
        };
        Some(Disconnect {
            reason,
            properties: Properties {
                reason_string: reason_string.map(ByteStr::from),
                server_reference: server_reference.map(ByteStr::from),
                ..Properties::default()
            },
        })
    }

    /// Reports whether the will is published: on every end but DISCONNECT 0x00 from the
    /// client, which also covers every 3.x DISCONNECT.
    fn publishes_will(&self) -> bool {
        match self {
            Close::Disconnected(reason) => *reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            _ => true,
        }
    }

    fn violation(reason: ReasonCode, detail: impl Into<String>) -> Close {
        Close::Violation {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Disconnected(reason) => write!(f, "client sent DISCONNECT 0x{:02X}", reason.0),
            Close::PeerClosed => f.write_str("client closed the connection without DISCONNECT"),
            Close::ReadFailed(error) => write!(f, "read failed: {error}"),
            Close::WriterStopped => f.write_str("write failed"),
            Close::KeepAliveExpired => f.write_str("keep-alive expired"),
            Close::Violation { reason, detail } => {
                write!(f, "protocol violation 0x{:02X}: {detail}", reason.0)
            }
            Close::Requested(request) => {
                write!(f, "server closed it with 0x{:02X}", request.reason.0)?;
                match &request.server_reference {
                    Some(reference) => write!(f, ", server reference {reference:?}"),
                    None => Ok(()),
                }
            }
            Close::SessionLost => f.write_str("session taken over by another connection"),
        }
    }
}
