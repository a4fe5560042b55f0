//! The will message in the session state machine: kept while the connection is up, armed with
//! its delay once the connection ends, and handed out when it is due.
//!
//! Every method that hands out a will takes it out of the session, so a will is published at
//! most once whichever of the connection's end, the delay timer or the session's end comes
//! first.

use std::time::{Duration, Instant};

use super::Session;
use crate::will::WillMessage;

/// A will whose connection ended, waiting for its Will Delay Interval.
#[derive(Debug)]
pub(super) struct DelayedWill {
    pub(super) will: WillMessage,
    pub(super) due: Instant,
}

impl Session {
    /// Sets the will of the connection that just attached, replacing none: the instance calls
    /// [`Session::handle_reconnect`] or ends the session before a new connection attaches.
    pub(crate) fn handle_will(&mut self, will: Option<WillMessage>) {
        self.will = will;
        self.record_will();
    }

    /// Handles the will when the connection ends at `now`; `publish` is false after DISCONNECT
    /// 0x00, which deletes it.
    ///
    /// Returns the will to publish at once when it has no delay. A will with a delay is kept
    /// until [`Session::poll_will`]'s deadline or until the session ends, whichever is first.
    pub(crate) fn handle_close_will(&mut self, publish: bool, now: Instant) -> Option<WillMessage> {
        let will = self.will.take()?;
        let due_now = self.arm_will(will, publish, now);
        self.record_will();
        due_now
    }

    /// Arms `will` for its delay, or returns it when it is due at once.
    fn arm_will(&mut self, will: WillMessage, publish: bool, now: Instant) -> Option<WillMessage> {
        if !publish {
            return None;
        }
        if will.delay == 0 {
            return Some(will);
        }
        let due = now
            .checked_add(Duration::from_secs(u64::from(will.delay)))
            .unwrap_or(now);
        self.delayed_will = Some(DelayedWill { will, due });
        None
    }

    /// Handles a new connection that resumes the session: a delayed will of the previous
    /// connection is cancelled [MQTT-3.1.2-8 in 5.0].
    ///
    /// When the previous connection is still attached (a takeover), its will is due now that its
    /// connection ends, unless it has a delay, which the new connection cancels at once. Returns
    /// the will to publish, if any.
    pub(crate) fn handle_reconnect(&mut self) -> Option<WillMessage> {
        self.delayed_will = None;
        let will = self.will.take()?;
        (will.delay == 0).then_some(will)
    }

    /// Returns when a delayed will falls due, or `None` when none waits.
    pub(crate) fn poll_will(&self) -> Option<Instant> {
        self.delayed_will.as_ref().map(|delayed| delayed.due)
    }

    /// Takes the delayed will if it is due at `now`.
    pub(crate) fn take_due_will(&mut self, now: Instant) -> Option<WillMessage> {
        let due = self.poll_will()?;
        if now < due {
            return None;
        }
        let will = self.delayed_will.take().map(|delayed| delayed.will);
        self.record_will();
        will
    }

    /// Takes the will because the session ends: a delayed will is published early, and the will
    /// of a connection still attached (replaced by a clean start) is published as its connection
    /// ends.
    pub(crate) fn take_will_at_end(&mut self) -> Option<WillMessage> {
        let delayed = self.delayed_will.take().map(|delayed| delayed.will);
        delayed.or_else(|| self.will.take())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchyard_codec::{ByteStr, Properties, ProtocolVersion, QoS};

    use super::*;
    use crate::ids::{ClientId, ConnectionId};
    use crate::session::Link;

    const CONNECTION: ConnectionId = ConnectionId(1);

    fn will(delay: u32) -> WillMessage {
        WillMessage {
            topic: ByteStr::from("status/client"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            delay,
            properties: Properties::default(),
        }
    }

    fn session_with_will(delay: u32, expiry_interval: u32) -> Session {
        let mut session = Session::new(ClientId::new("client"), expiry_interval, 10);
        let link = Link {
            version: ProtocolVersion::V5,
            window: 10,
            max_packet_size: None,
        };
        session.handle_attach(CONNECTION, link);
        session.handle_will(Some(will(delay)));
        session
    }

    #[test]
    fn normal_disconnect_deletes_will() {
        let now = Instant::now();
        let mut session = session_with_will(0, 60);
        assert_eq!(session.handle_close_will(false, now), None);
        assert_eq!(session.poll_will(), None);
        assert_eq!(session.take_will_at_end(), None);
    }

    #[test]
    fn abnormal_close_returns_undelayed_will() {
        let now = Instant::now();
        let mut session = session_with_will(0, 60);
        assert_eq!(session.handle_close_will(true, now), Some(will(0)));
        assert_eq!(session.take_will_at_end(), None);
    }

    #[test]
    fn delayed_will_falls_due_once() {
        let now = Instant::now();
        let mut session = session_with_will(30, 600);
        assert_eq!(session.handle_close_will(true, now), None);
        assert_eq!(session.poll_will(), Some(now + Duration::from_secs(30)));
        assert_eq!(session.take_due_will(now + Duration::from_secs(29)), None);
        assert_eq!(
            session.take_due_will(now + Duration::from_secs(30)),
            Some(will(30))
        );
        assert_eq!(session.take_due_will(now + Duration::from_secs(31)), None);
        assert_eq!(session.take_will_at_end(), None);
    }

    #[test]
    fn reconnect_cancels_delayed_will() {
        let now = Instant::now();
        let mut session = session_with_will(30, 600);
        session.handle_close_will(true, now);
        assert_eq!(session.handle_reconnect(), None);
        assert_eq!(session.poll_will(), None);
        assert_eq!(session.take_due_will(now + Duration::from_secs(60)), None);
    }

    #[test]
    fn takeover_publishes_only_undelayed_will() {
        let mut undelayed = session_with_will(0, 600);
        assert_eq!(undelayed.handle_reconnect(), Some(will(0)));

        let mut delayed = session_with_will(30, 600);
        assert_eq!(delayed.handle_reconnect(), None);
        assert_eq!(delayed.take_will_at_end(), None);
    }

    #[test]
    fn session_end_publishes_pending_will_early() {
        let now = Instant::now();
        let mut offline = session_with_will(30, 600);
        offline.handle_close_will(true, now);
        assert_eq!(offline.take_will_at_end(), Some(will(30)));
        assert_eq!(offline.poll_will(), None);

        // A clean start replaces a session whose connection is still attached.
        let mut online = session_with_will(30, 600);
        assert_eq!(online.take_will_at_end(), Some(will(30)));
    }

    #[test]
    fn new_will_replaces_nothing_after_reconnect() {
        let now = Instant::now();
        let mut session = session_with_will(30, 600);
        session.handle_close_will(true, now);
        session.handle_reconnect();
        session.handle_will(Some(will(5)));
        assert_eq!(session.handle_close_will(true, now), None);
        assert_eq!(session.poll_will(), Some(now + Duration::from_secs(5)));
    }
}
