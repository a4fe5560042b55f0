//! The accept loop of [`crate::ApiServer::serve`] and the timeouts of each HTTP/1.1
//! connection.
//!
//! The loop takes one of `max_connections` slots before it accepts, so at the cap further
//! clients wait in the kernel's listen backlog and cost this process no file descriptor. Each
//! connection runs on its own task, whose watchdog closes the connection when a request head
//! is not complete within `header_read_timeout`, or when a kept-alive connection waits longer
//! than `idle_timeout` for its next request. While a request is handled the watchdog sets no
//! deadline, because the gateway responds to every request on `/` within `request_timeout`
//! and the unknown-path handler responds at once.
//!
//! hyper's own `header_read_timeout` is not used: it runs from the moment hyper starts waiting
//! for a head, so on a kept-alive connection it would also cut the idle wait short.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// First pause after an accept error that is not about one connection, such as `EMFILE`. It
/// doubles on each further error up to [`MAX_ACCEPT_BACKOFF`], as in the MQTT listeners.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Shortest time between two log lines about the same repeating event: accept errors, or
/// reaching `max_connections`.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The connection settings of [`crate::ApiSettings`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` completes.
/// Then it drops the listener, so new connections are refused, and waits for the connection
/// tasks, each of which ends within `request_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut limit_log = LogLimiter::new(REPEAT_LOG_INTERVAL);
    let mut error_log = LogLimiter::new(REPEAT_LOG_INTERVAL);
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    let mut shutdown = pin!(shutdown);

    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = take_slot(&slots, limits.max_connections, &mut limit_log) => slot,
        };
        let Some(slot) = slot else {
            tracing::error!("The API connection slots were closed; stopping the accept loop");
            break;
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    stopping.clone(),
                    slot,
                ));
            }
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "API connection failed before it was accepted");
            }
            Err(error) => {
                if let Some(suppressed) = error_log.admit(Instant::now()) {
                    tracing::error!(
                        %error, ?backoff, suppressed,
                        "Failed to accept an API connection; pausing the accept loop"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = next_backoff(backoff);
            }
        }
    }

    drop(listener);
    stopping.cancel();
    connections.close();
    tracing::debug!(
        open_connections = connections.len(),
        "API listener closed; waiting for open connections"
    );
    connections.wait().await;
}

/// Waits for a free connection slot, logging at most once per [`REPEAT_LOG_INTERVAL`] that
/// the cap is reached. Returns `None` only if the semaphore is closed, and `serve` never
/// closes it.
async fn take_slot(
    slots: &Arc<Semaphore>,
    max_connections: usize,
    limit_log: &mut LogLimiter,
) -> Option<OwnedSemaphorePermit> {
    match Arc::clone(slots).try_acquire_owned() {
        Ok(slot) => return Some(slot),
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => {}
    }
    if let Some(suppressed) = limit_log.admit(Instant::now()) {
        tracing::warn!(
            max_connections,
            suppressed,
            "API connection limit reached; new connections wait in the listen backlog until \
             one closes"
        );
    }
    Arc::clone(slots).acquire_owned().await.ok()
}

fn next_backoff(backoff: Duration) -> Duration {
    backoff.saturating_mul(2).min(MAX_ACCEPT_BACKOFF)
}

/// Reports whether an accept error concerns only the connection being accepted, so the loop
/// can go on at once.
fn is_connection_error(error: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Lets one log line of a repeating event through per interval and counts the others.
struct LogLimiter {
    interval: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence at `now`. Returns the number of occurrences suppressed since the
    /// last logged one when this one should be logged, or `None` when it should not.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// Position of a connection in its request cycle, which sets the watchdog's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request head has been parsed yet, since the connection was accepted at `since`. No
    /// request has reached the router, so shutdown closes the connection at once.
    Opened { since: Instant },
    /// The first bytes of a later request arrived at `since` and its head is not complete.
    ReadingHead { since: Instant },
    /// A request head is complete and its response is not ready yet.
    Handling,
    /// The last response was ready at `since`, and no byte of a next request has arrived.
    Idle { since: Instant },
}

/// Reason the watchdog closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    HeaderRead,
    Idle,
    Shutdown,
}

/// The phase of one connection, shared by its stream, its service and its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog after a phase change, so it can move its deadline earlier.
    changed: Notify,
}

impl Activity {
    fn new(opened: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Opened { since: opened }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
        self.changed.notify_one();
    }

    /// Starts the head deadline of the next request when bytes arrive on an idle connection.
    /// Reads in the other phases are the current head or body and change nothing.
    fn bytes_read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHead {
                since: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Returns the earliest deadline of the connection: the one of its phase, or the end of
    /// the shutdown drain when that is earlier. `None` means no deadline.
    fn deadline(
        &self,
        limits: &ConnectionLimits,
        drain_deadline: Option<Instant>,
    ) -> Option<(Instant, Expiry)> {
        let phase_deadline = match self.phase() {
            Phase::Opened { since } | Phase::ReadingHead { since } => since
                .checked_add(limits.header_read_timeout)
                .map(|at| (at, Expiry::HeaderRead)),
            Phase::Idle { since } => since
                .checked_add(limits.idle_timeout)
                .map(|at| (at, Expiry::Idle)),
            Phase::Handling => None,
        };
        let drain_deadline = drain_deadline.map(|at| (at, Expiry::Shutdown));
        match (phase_deadline, drain_deadline) {
            (Some(phase), Some(drain)) => Some(if drain.0 < phase.0 { drain } else { phase }),
            (phase, drain) => phase.or(drain),
        }
    }
}

/// Serves one connection until it closes, its watchdog closes it, or shutdown ends it. `_slot`
/// is the connection's share of `max_connections`, given back when the task ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stopping: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(WatchedStream {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |request| handle_request(request, peer, router.clone(), activity.clone()))
    };
    let mut builder = http1::Builder::new();
    // The watchdog below replaces hyper's header timer; see the module documentation.
    builder.header_read_timeout(None);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    let mut drain_deadline = None;

    loop {
        let changed = activity.changed.notified();
        let deadline = activity.deadline(&limits, drain_deadline);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "API connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                // The phase may have changed since the deadline was computed.
                if let Some((at, expiry)) = activity.deadline(&limits, drain_deadline)
                    && at <= Instant::now()
                {
                    log_expiry(peer, expiry, &limits);
                    return;
                }
            }
            () = changed => {}
            () = stopping.cancelled(), if !draining => {
                draining = true;
                if let Phase::Opened { .. } = activity.phase() {
                    tracing::debug!(
                        %peer,
                        "Closed an API connection at shutdown before its first request head was complete"
                    );
                    return;
                }
                // hyper closes an idle kept-alive connection at once, and one with a request
                // in flight after its response.
                connection.as_mut().graceful_shutdown();
                drain_deadline = Instant::now().checked_add(limits.request_timeout);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_expiry(peer: SocketAddr, expiry: Expiry, limits: &ConnectionLimits) {
    match expiry {
        Expiry::HeaderRead => tracing::debug!(
            %peer, header_read_timeout = ?limits.header_read_timeout,
            "Closed an API connection whose request head was not complete in time"
        ),
        Expiry::Idle => tracing::debug!(
            %peer, idle_timeout = ?limits.idle_timeout,
            "Closed an idle API connection"
        ),
        Expiry::Shutdown => tracing::warn!(
            %peer, request_timeout = ?limits.request_timeout,
            "Closed an API connection whose request did not finish within the shutdown bound"
        ),
    }
}

/// Passes one request to the router with the peer address as [`ConnectInfo`], and records
/// when its handling starts and when its response is ready.
async fn handle_request(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    activity: Arc<Activity>,
) -> Result<Response, Infallible> {
    activity.set(Phase::Handling);
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = router.oneshot(request).await;
    // Every response body is complete here, so the idle deadline also bounds its writing.
    activity.set(Phase::Idle {
        since: Instant::now(),
    });
    response
}

/// A TCP stream that reports arriving bytes to its connection's [`Activity`].
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > filled_before {
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut backoff = FIRST_ACCEPT_BACKOFF;
        let mut seen = vec![backoff];
        for _ in 0..10 {
            backoff = next_backoff(backoff);
            seen.push(backoff);
        }
        assert_eq!(seen[1], Duration::from_millis(20));
        assert_eq!(seen[2], Duration::from_millis(40));
        assert_eq!(seen.last(), Some(&MAX_ACCEPT_BACKOFF));
        assert!(seen.iter().all(|pause| *pause <= MAX_ACCEPT_BACKOFF));
    }

    #[test]
    fn log_limiter_counts_suppressed_repeats() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(10));

        assert_eq!(limiter.admit(start), Some(0));
        assert_eq!(limiter.admit(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit(start + Duration::from_secs(9)), None);
        assert_eq!(limiter.admit(start + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.admit(start + Duration::from_secs(11)), None);
        assert_eq!(limiter.admit(start + Duration::from_secs(30)), Some(1));
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn deadline_follows_phase() {
        let opened = Instant::now();
        let activity = Activity::new(opened);
        let limits = limits();
        assert_eq!(
            activity.deadline(&limits, None),
            Some((opened + limits.header_read_timeout, Expiry::HeaderRead))
        );

        activity.set(Phase::Handling);
        assert_eq!(activity.deadline(&limits, None), None);

        let ready = Instant::now();
        activity.set(Phase::Idle { since: ready });
        assert_eq!(
            activity.deadline(&limits, None),
            Some((ready + limits.idle_timeout, Expiry::Idle))
        );

        activity.bytes_read();
        let Phase::ReadingHead { since } = activity.phase() else {
            panic!("bytes on an idle connection start a head read");
        };
        assert_eq!(
            activity.deadline(&limits, None),
            Some((since + limits.header_read_timeout, Expiry::HeaderRead))
        );
    }

    #[test]
    fn bytes_read_while_handling_change_nothing() {
        let activity = Activity::new(Instant::now());
        activity.set(Phase::Handling);

        activity.bytes_read();

        assert_eq!(activity.phase(), Phase::Handling);
    }

    #[test]
    fn drain_deadline_wins_when_earlier() {
        let activity = Activity::new(Instant::now());
        let limits = limits();
        activity.set(Phase::Handling);
        let drain = Instant::now() + Duration::from_secs(1);

        assert_eq!(
            activity.deadline(&limits, Some(drain)),
            Some((drain, Expiry::Shutdown))
        );

        let ready = Instant::now();
        activity.set(Phase::Idle { since: ready });
        assert_eq!(
            activity.deadline(&limits, Some(drain)),
            Some((drain, Expiry::Shutdown))
        );
        let late_drain = ready + Duration::from_secs(120);
        assert_eq!(
            activity.deadline(&limits, Some(late_drain)),
            Some((ready + limits.idle_timeout, Expiry::Idle))
        );
    }
}
