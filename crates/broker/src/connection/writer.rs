//! The writer task of a connection: it gathers the reader's replies and the session's packets
//! into one buffer and writes it with one `write_all` per wake-up.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use switchyard_codec::{Disconnect, Packet, ProtocolVersion, encode_packet};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tracing::debug;

use crate::ids::ConnectionId;
use crate::instance::SessionSlot;

/// A request from the reader to the writer.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A reply to send, such as PUBACK or SUBACK.
    Packet(Packet),
    /// Send what is pending, then the DISCONNECT if any, and close the write side.
    Close(Option<Disconnect>),
}

/// A batch stops growing at this many bytes, so a long backlog is written in pieces instead of
/// one large buffer.
const BATCH_BYTES: usize = 64 * 1024;

/// Session packets taken per lock of the session.
const SESSION_PACKETS_PER_LOCK: usize = 64;

/// A buffer that grew past this capacity is released after its write, so an idle connection
/// does not keep the memory of its largest burst.
const IDLE_BUFFER_CAPACITY: usize = 8 * 1024;

/// Writes until the reader sends [`Outgoing::Close`] or drops its sender, or a write fails.
///
/// `buf` contains the packets to send first (the CONNACK). A failed write is logged here, and
/// the reader sees the task end.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    writer: W,
    slot: Arc<SessionSlot>,
    connection: ConnectionId,
    version: ProtocolVersion,
    outgoing: mpsc::Receiver<Outgoing>,
    buf: BytesMut,
) -> io::Result<()> {
    let result = write_loop(writer, slot, connection, version, outgoing, buf).await;
    if let Err(error) = &result {
        debug!(%error, "Write failed");
    }
    result
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    slot: Arc<SessionSlot>,
    connection: ConnectionId,
    version: ProtocolVersion,
    mut outgoing: mpsc::Receiver<Outgoing>,
    buf: BytesMut,
) -> io::Result<()> {
    let mut batch = Batch {
        buf,
        version,
        closing: None,
        session_lost: false,
    };

    loop {
        // Replies first, then the session's packets, up to the batch size.
        batch.take_replies(&mut outgoing);
        let more = batch.closing.is_none()
            && !batch.session_lost
            && batch.take_session_packets(&slot, connection);
        let closing = batch.closing.take();
        let close_now = closing.is_some();
        if let Some(Some(disconnect)) = closing {
            encode_packet(&Packet::Disconnect(disconnect), version, &mut batch.buf);
        }

        if !batch.buf.is_empty() {
            writer.write_all(&batch.buf).await?;
            writer.flush().await?;
            batch.buf.clear();
            if batch.buf.capacity() > IDLE_BUFFER_CAPACITY {
                batch.buf = BytesMut::new();
            }
        }
        if close_now {
            return writer.shutdown().await;
        }
        if more {
            continue;
        }

        // Wait for a reply or for the session to have something to send.
        tokio::select! {
            item = outgoing.recv() => batch.add_reply(item),
            () = slot.wake.notified(), if !batch.session_lost => {}
        }
    }
}

/// The packets gathered for the next write.
struct Batch {
    buf: BytesMut,
    version: ProtocolVersion,
    /// Set once the reader asked to close, with the DISCONNECT to send last.
    closing: Option<Option<Disconnect>>,
    /// Set once another connection owns the session; session packets are no longer this
    /// connection's to send.
    session_lost: bool,
}

impl Batch {
    fn take_replies(&mut self, outgoing: &mut mpsc::Receiver<Outgoing>) {
        while self.buf.len() < BATCH_BYTES && self.closing.is_none() {
            match outgoing.try_recv() {
                Ok(item) => self.add_reply(Some(item)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.add_reply(None),
            }
        }
    }

    fn add_reply(&mut self, item: Option<Outgoing>) {
        match item {
            Some(Outgoing::Packet(packet)) => encode_packet(&packet, self.version, &mut self.buf),
            Some(Outgoing::Close(disconnect)) => self.closing = Some(disconnect),
            // The reader is gone without saying how to close.
            None => self.closing = Some(None),
        }
    }

    /// Adds the session's packets to the batch; returns whether it stopped early because the
    /// batch is full, so more may be waiting.
    fn take_session_packets(&mut self, slot: &SessionSlot, connection: ConnectionId) -> bool {
        let now = tokio::time::Instant::now().into_std();
        while self.buf.len() < BATCH_BYTES {
            let mut packets = Vec::new();
            {
                let mut session = slot.lock();
                if !session.is_owned_by(connection) {
                    drop(session);
                    self.session_lost = true;
                    // This task may have taken the wake-up meant for the new owner's writer.
                    slot.wake.notify_one();
                    return false;
                }
                while packets.len() < SESSION_PACKETS_PER_LOCK {
                    match session.poll_transmit(now) {
                        Some(packet) => packets.push(packet),
                        None => break,
                    }
                }
            }
            let drained = packets.len() < SESSION_PACKETS_PER_LOCK;
            for packet in &packets {
                encode_packet(packet, self.version, &mut self.buf);
            }
            if drained {
                return false;
            }
        }
        true
    }
}
