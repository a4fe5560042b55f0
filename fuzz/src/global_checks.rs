//! Checks of the global endpoint's CONNECT handling: `switchyard_broker::read_connect` over an
//! in-memory stream, the CONNACK refusal it calls for, and `switchyard_dr::routing`.
//!
//! Nothing here opens a socket or waits on the clock. The stream is an in-memory reader that is
//! always ready, except that an empty chunk makes it return `Pending` once and wake itself, so
//! the one-hour deadline given to `read_connect` can never expire.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use switchyard_broker::{ReadConnectError, read_connect, write_connack_refusal};
use switchyard_codec::{
    Connect, Packet, ProtocolVersion, ReasonCode, decode_connect, decode_packet,
};
use switchyard_dr::routing::{FallbackPolicy, MemberView, Route, choose_member, named_instance};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

use crate::codec_checks::SplitInput;

/// Group `max_connect_bytes` values: one below typical CONNECT sizes and the default, 65,536.
const MAX_CONNECT_BYTES: [u32; 2] = [64, 65_536];

/// One hour. `ChunkedReader` never waits for time to pass, so the deadline is never reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Member ids of the DR group the routing checks use, in fallback order.
const MEMBER_IDS: [&str; 3] = ["mqtt-cn-hz01", "mqtt-cn-sh01", "mqtt-cn-bj01"];

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` to completion on a current-thread runtime, built once per thread.
fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut runtime = cell.borrow_mut();
        let runtime = runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime builds without I/O")
        });
        runtime.block_on(future)
    })
}

/// An `AsyncRead` that delivers fixed chunks in order, then end of file.
struct ChunkedReader<'a> {
    chunks: Vec<&'a [u8]>,
    next: usize,
}

impl AsyncRead for ChunkedReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let Some(chunk) = self.chunks.get(self.next).copied() else {
            return Poll::Ready(Ok(()));
        };
        if chunk.is_empty() {
            // Zero bytes read means end of file, so an empty chunk becomes a pause instead.
            self.next += 1;
            context.waker().wake_by_ref();
            return Poll::Pending;
        }
        let len = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..len]);
        if len == chunk.len() {
            self.next += 1;
        } else {
            let index = self.next;
            self.chunks[index] = &chunk[len..];
        }
        Poll::Ready(Ok(()))
    }
}

/// Checks one input of the [`SplitInput`] layout.
///
/// `read_connect` must return what `decode_connect` returns for the whole stream: the CONNECT
/// followed by a prefix of the bytes after it, the same decode error, or `Closed` with every byte
/// counted when the stream ends early. It must never time out or fail with an I/O error. Each
/// refusal must encode as a CONNACK that decodes with its reason, and each decoded CONNECT goes
/// through the routing checks of [`check_routing`].
pub fn check_global_connect(data: &[u8]) {
    let input = SplitInput::parse(data);
    for max_size in MAX_CONNECT_BYTES {
        let mut reader = ChunkedReader {
            chunks: input.chunks(),
            next: 0,
        };
        let result = block_on(read_connect(&mut reader, CONNECT_TIMEOUT, max_size));

        let mut whole = BytesMut::from(input.stream);
        let expected = decode_connect(&mut whole, max_size);
        match (result, expected) {
            (Ok((connect, rest)), Ok(Some(expected))) => {
                assert_eq!(connect, expected, "limit {max_size}: CONNECT differs");
                assert!(
                    whole.starts_with(&rest),
                    "limit {max_size}: the bytes after CONNECT are not the stream's"
                );
                check_routing(&connect);
            }
            (Err(ReadConnectError::Decode(error)), Err(expected)) => {
                assert_eq!(error, expected, "limit {max_size}: decode errors differ");
                check_refusal(&ReadConnectError::Decode(error));
            }
            (Err(ReadConnectError::Closed { received }), Ok(None)) => {
                assert_eq!(
                    received,
                    input.stream.len(),
                    "limit {max_size}: bytes received"
                );
                assert_eq!(ReadConnectError::Closed { received }.refusal(), None);
            }
            (result, expected) => {
                panic!(
                    "limit {max_size}: read_connect returned {result:?}, decode_connect {expected:?}"
                )
            }
        }
    }
}

/// Checks that a refusal goes only to a client whose version is known, as a CONNACK that
/// decodes in that version with the refusal's reason.
fn check_refusal(error: &ReadConnectError) {
    let Some((version, reason)) = error.refusal() else {
        if let ReadConnectError::Decode(decode) = error
            && let Some(version) = decode.connect_version
        {
            // Only 3.x clients with a supported level go without a CONNACK.
            assert!(
                !version.is_v5(),
                "a 5.0 client got no CONNACK for {decode:?}"
            );
            assert_ne!(
                decode.reason_code(),
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            );
        }
        return;
    };
    let ReadConnectError::Decode(decode) = error else {
        panic!("a refusal for an error that is not a decode error: {error:?}");
    };
    assert_eq!(decode.connect_version, Some(version));
    assert_eq!(decode.reason_code(), reason);
    check_connack(version, reason);
}

/// Writes the CONNACK the endpoint sends for `reason` and checks that it decodes back.
fn check_connack(version: ProtocolVersion, reason: ReasonCode) {
    let mut wire = Vec::new();
    block_on(write_connack_refusal(&mut wire, version, reason))
        .expect("writing to a Vec cannot fail");
    let mut buf = BytesMut::from(&wire[..]);
    let decoded = decode_packet(&mut buf, version, u32::MAX);
    let Ok(Some(Packet::ConnAck(connack))) = decoded else {
        panic!("{version:?}: the refusal {wire:02X?} for {reason:?} decodes to {decoded:?}");
    };
    assert!(
        buf.is_empty(),
        "{version:?}: bytes left after the refusal CONNACK"
    );
    assert_eq!(
        connack.reason, reason,
        "{version:?}: refusal CONNACK {wire:02X?}"
    );
    assert!(!connack.session_present);
}

/// Checks `named_instance` and `choose_member` for a decoded CONNECT against every combination
/// of access and health of three members and both fallback policies.
fn check_routing(connect: &Connect) {
    let username = connect.username.as_deref();
    let named = named_instance(username);
    if let Some(instance) = named {
        let parts: Vec<&str> = username.unwrap_or_default().split('|').collect();
        assert_eq!(parts.len(), 3, "named_instance accepted {username:?}");
        assert_eq!(parts[2], instance);
        assert!(!instance.is_empty());
    }

    for states in 0u32..64 {
        let views: Vec<MemberView<'_>> = MEMBER_IDS
            .iter()
            .enumerate()
            .map(|(index, &id)| MemberView {
                id,
                global_access: states & (1 << (2 * index)) != 0,
                healthy: states & (1 << (2 * index + 1)) != 0,
            })
            .collect();
        for policy in [FallbackPolicy::FirstInOrder, FallbackPolicy::HashClientId] {
            let route = choose_member(&views, named, &connect.client_id, policy);
            let again = choose_member(&views, named, &connect.client_id, policy);
            assert_eq!(route, again, "{policy:?}: the route is not deterministic");
            check_route(&views, named, policy, route);
            if route == Route::Unavailable {
                check_connack(connect.protocol, ReasonCode::SERVER_UNAVAILABLE);
            }
        }
    }
}

fn check_route(
    views: &[MemberView<'_>],
    named: Option<&str>,
    policy: FallbackPolicy,
    route: Route<'_>,
) {
    let eligible = |view: &&MemberView<'_>| view.global_access && view.healthy;
    let named_eligible = views
        .iter()
        .filter(eligible)
        .any(|view| Some(view.id) == named);
    let first_eligible = views.iter().find(eligible).map(|view| view.id);
    match route {
        Route::Named(id) => {
            assert_eq!(
                Some(id),
                named,
                "{policy:?}: routed to a member it did not name"
            );
            assert!(
                named_eligible,
                "{policy:?}: routed to {id}, which cannot take devices"
            );
        }
        Route::Fallback(id) => {
            assert!(
                !named_eligible,
                "{policy:?}: fell back although {named:?} can take it"
            );
            assert!(
                views.iter().filter(eligible).any(|view| view.id == id),
                "{policy:?}: fell back to {id}, which cannot take devices"
            );
            if policy == FallbackPolicy::FirstInOrder {
                assert_eq!(Some(id), first_eligible, "not the first eligible member");
            }
        }
        Route::Unavailable => {
            assert_eq!(
                first_eligible, None,
                "{policy:?}: unavailable with an eligible member"
            );
        }
    }
}
