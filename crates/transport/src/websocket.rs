//! MQTT over WebSocket: the server side of the HTTP upgrade (path and subprotocol checks) and
//! [`WebSocketByteStream`], which turns a WebSocket connection back into a byte stream.
//!
//! MQTT packets and WebSocket frames are independent. One binary frame may carry several
//! packets, and one packet may span several frames (MQTT 5.0 section 6.0). The MQTT codec
//! therefore reads the concatenated payloads of binary frames as it reads a TCP stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Path served when a `ws` or `wss` listener sets none.
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

/// Accepted `Sec-WebSocket-Protocol` values, most preferred first: `mqtt` is the name MQTT
/// 3.1.1 and 5.0 register, `mqttv3.1` the one MQTT 3.1 clients send.
pub const MQTT_SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Checks a WebSocket upgrade request and completes `response` for it.
///
/// Returns the chosen subprotocol with the response, or an HTTP error: 404 for a path other than
/// `path` (the query string is ignored), 400 when no subprotocol in [`MQTT_SUBPROTOCOLS`] is
/// offered, because MQTT over WebSocket requires one [MQTT-6.0.0-3].
#[allow(
    clippy::result_large_err,
    reason = "the error is tungstenite's ErrorResponse, which its Callback trait returns by value"
)]
pub fn negotiate_upgrade(
    request: &Request,
    mut response: Response,
    path: &str,
) -> Result<(Response, &'static str), ErrorResponse> {
    if request.uri().path() != path {
        let message = format!("Not Found: MQTT over WebSocket is served at {path}\n");
        return Err(error_response(StatusCode::NOT_FOUND, message));
    }
    let Some(subprotocol) = choose_subprotocol(request) else {
        let message = "Bad Request: the Sec-WebSocket-Protocol header must offer mqtt\n";
        return Err(error_response(StatusCode::BAD_REQUEST, message.to_owned()));
    };
    response.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(subprotocol),
    );
    Ok((response, subprotocol))
}

/// Returns the most preferred MQTT subprotocol the request offers. The header may be repeated
/// and each value is a comma-separated list; tokens compare case-sensitively.
fn choose_subprotocol(request: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    MQTT_SUBPROTOCOLS
        .into_iter()
        .find(|subprotocol| offered.contains(subprotocol))
}

fn error_response(status: StatusCode, message: String) -> ErrorResponse {
    let length = HeaderValue::from(message.len());
    let mut response = ErrorResponse::new(Some(message));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, length);
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A WebSocket connection read and written as a byte stream of MQTT data.
///
/// Reads return the payloads of binary messages in order, with ping and pong frames handled by
/// tungstenite underneath. A text message fails the read with `InvalidData` after sending a
/// close frame with code 1003, because MQTT allows only binary frames [MQTT-6.0.0-1]. A close
/// frame from the peer reads as end of stream. Each write sends one binary message, and
/// vectored writes gather their buffers into one message.
pub struct WebSocketByteStream<S> {
    inner: WebSocketStream<S>,
    /// The part of the last binary message not yet read.
    unread: Bytes,
    state: ReadState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The peer sent a close frame; the reply tungstenite queued is flushed before end of stream.
    FlushingCloseReply,
    Ended,
    /// A text message arrived; the close frame that rejects it is queued next.
    RejectingText,
    /// The close frame that rejects a text message is queued and being flushed.
    FlushingRejection,
    Rejected,
}

impl<S> WebSocketByteStream<S> {
    /// Wraps a WebSocket connection whose handshake is complete.
    pub fn new(inner: WebSocketStream<S>) -> WebSocketByteStream<S> {
        WebSocketByteStream {
            inner,
            unread: Bytes::new(),
            state: ReadState::Open,
        }
    }

    /// Returns the underlying WebSocket connection.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.inner
    }

    /// Returns the underlying WebSocket connection. Bytes of a binary message that were
    /// received but not yet read are dropped.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.inner
    }
}

impl<S> AsyncRead for WebSocketByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.unread.is_empty() {
                let count = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread.split_to(count));
                return Poll::Ready(Ok(()));
            }
            match this.state {
                ReadState::Open => {}
                ReadState::FlushingCloseReply => {
                    // A failed flush leaves nothing to do but end the stream.
                    let _ = ready!(Pin::new(&mut this.inner).poll_flush(cx));
                    this.state = ReadState::Ended;
                    continue;
                }
                ReadState::Ended => return Poll::Ready(Ok(())),
                ReadState::RejectingText => {
                    match ready!(Pin::new(&mut this.inner).poll_ready(cx)) {
                        Ok(()) => {
                            let frame = CloseFrame {
                                code: CloseCode::Unsupported,
                                reason: "MQTT over WebSocket uses binary frames only".into(),
                            };
                            let close = Message::Close(Some(frame));
                            let queued = Pin::new(&mut this.inner).start_send(close);
                            this.state = match queued {
                                Ok(()) => ReadState::FlushingRejection,
                                Err(_) => ReadState::Rejected,
                            };
                        }
                        Err(_) => this.state = ReadState::Rejected,
                    }
                    continue;
                }
                ReadState::FlushingRejection => {
                    let _ = ready!(Pin::new(&mut this.inner).poll_flush(cx));
                    this.state = ReadState::Rejected;
                    continue;
                }
                ReadState::Rejected => return Poll::Ready(Err(text_frame_error())),
            }

            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.unread = data,
                Some(Ok(Message::Text(_))) => this.state = ReadState::RejectingText,
                Some(Ok(Message::Close(_))) => this.state = ReadState::FlushingCloseReply,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(err)) => return Poll::Ready(Err(into_io_error(err))),
                None => this.state = ReadState::Ended,
            }
        }
    }
}

impl<S> AsyncWrite for WebSocketByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        ready!(this.poll_send(cx, Bytes::copy_from_slice(buf)))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|slice| slice.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut message = BytesMut::with_capacity(total);
        for slice in bufs {
            message.extend_from_slice(slice);
        }
        let this = self.get_mut();
        ready!(this.poll_send(cx, message.freeze()))?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_flush(cx)
            .map_err(into_io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_close(cx)
            .map_err(into_io_error)
    }
}

impl<S> WebSocketByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Queues `data` as one binary message once the sink has room. The message is sent on the
    /// next flush, or earlier when tungstenite's write buffer fills.
    fn poll_send(&mut self, cx: &mut Context<'_>, data: Bytes) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(into_io_error)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(data))
            .map_err(into_io_error)?;
        Poll::Ready(Ok(()))
    }
}

fn text_frame_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "received a WebSocket text frame; MQTT over WebSocket uses binary frames only",
    )
}

fn into_io_error(err: WsError) -> io::Error {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the WebSocket connection is closed",
        ),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            io::Error::new(io::ErrorKind::ConnectionReset, err)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http;

    fn request(path: &str, subprotocols: &[&str]) -> Request {
        let mut builder = http::Request::builder().uri(path);
        for value in subprotocols {
            builder = builder.header(SEC_WEBSOCKET_PROTOCOL, *value);
        }
        builder.body(()).expect("valid request")
    }

    fn negotiate(path: &str, subprotocols: &[&str]) -> Result<&'static str, StatusCode> {
        let request = request(path, subprotocols);
        match negotiate_upgrade(&request, Response::new(()), "/mqtt") {
            Ok((response, chosen)) => {
                let header = response.headers().get(SEC_WEBSOCKET_PROTOCOL);
                assert_eq!(header.and_then(|v| v.to_str().ok()), Some(chosen));
                Ok(chosen)
            }
            Err(response) => Err(response.status()),
        }
    }

    #[test]
    fn upgrade_prefers_mqtt() {
        assert_eq!(negotiate("/mqtt", &["mqtt"]), Ok("mqtt"));
        assert_eq!(negotiate("/mqtt", &["mqttv3.1, mqtt"]), Ok("mqtt"));
        assert_eq!(negotiate("/mqtt", &["mqttv3.1"]), Ok("mqttv3.1"));
        assert_eq!(negotiate("/mqtt", &["chat", "mqtt"]), Ok("mqtt"));
        assert_eq!(negotiate("/mqtt?token=1", &["mqtt"]), Ok("mqtt"));
    }

    #[test]
    fn upgrade_rejects_missing_subprotocol() {
        assert_eq!(negotiate("/mqtt", &[]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(negotiate("/mqtt", &["MQTT"]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(negotiate("/mqtt", &["chat"]), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn upgrade_rejects_other_paths() {
        assert_eq!(negotiate("/", &["mqtt"]), Err(StatusCode::NOT_FOUND));
        assert_eq!(negotiate("/mqtt/", &["mqtt"]), Err(StatusCode::NOT_FOUND));
        assert_eq!(negotiate("/other", &["mqtt"]), Err(StatusCode::NOT_FOUND));
    }

    #[test]
    fn error_response_has_length() {
        let request = request("/other", &["mqtt"]);
        let Err(response) = negotiate_upgrade(&request, Response::new(()), "/mqtt") else {
            panic!("wrong path was accepted");
        };
        let body = response.body().clone().unwrap_or_default();
        let length = response.headers().get(CONTENT_LENGTH).cloned();
        assert_eq!(length, Some(HeaderValue::from(body.len())));
        assert!(body.contains("/mqtt"), "{body}");
    }
}
