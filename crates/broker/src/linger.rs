//! The lingering close: after the server's last packet, keep reading for a short while before
//! the socket is closed.
//!
//! A server that closes a TCP socket with unread input, or that receives input after closing
//! it, makes its kernel send a reset. A client that is still writing (PUBREL packets
//! for PUBRECs it has not read, say) then gets the reset before it reads the server's
//! DISCONNECT or refusing CONNACK, although those bytes reached it. The reset discards its
//! unread receive buffer or fails its next write. So the server first shuts down its write
//! side, which sends FIN after the last packet, and then reads and discards input until the
//! client closes too, for at most [`LINGER_TIMEOUT`] and [`LINGER_MAX_BYTES`].
//!
//! The drain runs on the connection's byte stream, so it works the same over TLS (shutdown
//! sends close_notify, and records are still read and decrypted) and WebSocket (shutdown sends
//! a Close frame, and frames are still read) as over plain TCP.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Maximum time a closing connection keeps reading. A client that reads the server's packet
/// closes within a round trip, so one second covers slow links without letting clients that
/// never close hold the task for long.
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Maximum input a closing connection discards before it closes anyway. 64 KiB is far more than
/// the acknowledgements a client has in flight when the close reaches it (a PUBREL is 4
/// bytes), while a client that keeps flooding cannot make the server read without end.
pub(crate) const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Shuts down the write side of `stream`, then drains its input as [`drain_input`] does.
///
/// Call it once the last packet is written and flushed; errors mean the peer is gone already,
/// so they end the linger without being reported.
pub async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let shutdown = tokio::time::timeout(LINGER_TIMEOUT, stream.shutdown()).await;
    if matches!(shutdown, Ok(Ok(()))) {
        drain_input(stream).await;
    }
}

/// Reads and discards input until the peer closes, a read fails, [`LINGER_MAX_BYTES`] are
/// read or [`LINGER_TIMEOUT`] passes, whichever comes first.
pub(crate) async fn drain_input<R: AsyncRead + Unpin>(reader: &mut R) {
    let drain = async {
        let mut chunk = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => discarded += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}
