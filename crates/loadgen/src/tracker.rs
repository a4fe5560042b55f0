//! The coordinator's view of every device, built from [`DeviceEvent`]s, and the failover figures
//! computed from it.

use std::collections::BTreeMap;

use switchyard_codec::{ProtocolVersion, ReasonCode};
use tokio::time::Instant;

use crate::device::DeviceEvent;
use crate::report::{Percentiles, Report, signed_ms};

/// The coordinator's record of one device.
#[derive(Debug)]
pub struct DeviceState {
    pub protocol: ProtocolVersion,
    /// The first connection and subscription succeeded.
    pub ready: bool,
    /// Connected and subscribed right now.
    pub subscribed: bool,
    /// Disconnections at or after the instant the DisasterDowngrade request was sent.
    pub disconnects_after_downgrade: usize,
    /// The first of those disconnections, with its reason code (`None`: closed without one).
    pub first_disconnect: Option<(Instant, Option<ReasonCode>)>,
    /// CONNACK of the latest reconnection attempt, until its subscription is acknowledged.
    pending_connack: Option<Instant>,
    /// CONNACK of the latest reconnection whose subscription was acknowledged.
    pub reconnected_at: Option<Instant>,
    pub received_at: Option<Instant>,
    /// The latest failed connection attempt, for timeout messages.
    pub last_error: Option<String>,
}

/// Per-device state plus run-wide counters.
pub struct Tracker {
    pub devices: Vec<DeviceState>,
    /// Instant just before the DisasterDowngrade request was written; disconnections from then
    /// on are counted as caused by the failover.
    pub downgrade_sent_at: Option<Instant>,
    /// When the last device finished its first connection and subscription.
    pub last_ready_at: Option<Instant>,
    pub disconnections_before_downgrade: usize,
    pub failed_attempts: u64,
    /// The first device that gave up, with its error.
    pub first_failure: Option<(usize, String)>,
}

impl Tracker {
    /// Creates the state of devices that use the given protocols, in device order.
    pub fn new(protocols: impl IntoIterator<Item = ProtocolVersion>) -> Tracker {
        let devices = protocols
            .into_iter()
            .map(|protocol| DeviceState {
                protocol,
                ready: false,
                subscribed: false,
                disconnects_after_downgrade: 0,
                first_disconnect: None,
                pending_connack: None,
                reconnected_at: None,
                received_at: None,
                last_error: None,
            })
            .collect();
        Tracker {
            devices,
            downgrade_sent_at: None,
            last_ready_at: None,
            disconnections_before_downgrade: 0,
            failed_attempts: 0,
            first_failure: None,
        }
    }

    /// Updates the state with one event.
    pub fn apply(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::Ready { device, at } => {
                self.last_ready_at = Some(self.last_ready_at.map_or(at, |last| last.max(at)));
                let state = &mut self.devices[device];
                state.ready = true;
                state.subscribed = true;
            }
            DeviceEvent::Lost { device, at, reason } => {
                let after_downgrade = self.downgrade_sent_at.is_some_and(|sent| at >= sent);
                let state = &mut self.devices[device];
                state.subscribed = false;
                if after_downgrade {
                    state.disconnects_after_downgrade += 1;
                    state.first_disconnect.get_or_insert((at, reason));
                } else {
                    self.disconnections_before_downgrade += 1;
                }
            }
            DeviceEvent::Reconnected { device, at } => {
                self.devices[device].pending_connack = Some(at);
            }
            DeviceEvent::Resubscribed { device } => {
                let state = &mut self.devices[device];
                state.subscribed = true;
                state.reconnected_at = state.pending_connack.take();
            }
            DeviceEvent::AttemptFailed { device, error } => {
                self.failed_attempts += 1;
                self.devices[device].last_error = Some(error);
            }
            DeviceEvent::Failed { device, error } => {
                self.devices[device].last_error = Some(error.clone());
                self.first_failure.get_or_insert((device, error));
            }
            DeviceEvent::Received { device, at } => {
                self.devices[device].received_at.get_or_insert(at);
            }
        }
    }

    /// Counts the devices for which `predicate` holds.
    pub fn count(&self, predicate: impl Fn(&DeviceState) -> bool) -> usize {
        self.devices.iter().filter(|state| predicate(state)).count()
    }

    /// Reports whether every device was disconnected by the failover and is subscribed again.
    pub fn all_reconnected(&self) -> bool {
        self.devices
            .iter()
            .all(|state| state.disconnects_after_downgrade > 0 && state.subscribed)
    }

    /// Describes the first device that matches `predicate` and its latest error, for messages.
    pub fn example(&self, predicate: impl Fn(&DeviceState) -> bool) -> String {
        let Some((index, state)) = self
            .devices
            .iter()
            .enumerate()
            .find(|(_, state)| predicate(state))
        else {
            return String::new();
        };
        match &state.last_error {
            Some(error) => format!("; bench-{index}, for one, last failed with: {error}"),
            None => format!("; bench-{index}, for one, reported no error"),
        }
    }

    /// Fills the disconnection and reconnection figures of `report`, measured from `t0`.
    pub fn fill_failover_figures(&self, t0: Instant, report: &mut Report) {
        report.disconnected_devices = self.count(|state| state.disconnects_after_downgrade > 0);
        report.disconnections = self
            .devices
            .iter()
            .map(|state| state.disconnects_after_downgrade)
            .sum();
        report.disconnections_before_downgrade = self.disconnections_before_downgrade;
        report.failed_attempts = self.failed_attempts;

        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut first_disconnect: Option<Instant> = None;
        let mut after_t0 = Vec::new();
        let mut offline = Vec::new();
        for state in &self.devices {
            let Some((lost_at, reason)) = state.first_disconnect else {
                continue;
            };
            *reasons
                .entry(reason_label(state.protocol, reason))
                .or_default() += 1;
            first_disconnect = Some(first_disconnect.map_or(lost_at, |first| first.min(lost_at)));
            if let Some(reconnected_at) = state.reconnected_at
                && reconnected_at >= lost_at
            {
                after_t0.push(signed_ms(t0, reconnected_at));
                offline.push(signed_ms(lost_at, reconnected_at));
            }
        }
        report.reason_codes = reasons.into_iter().collect();
        report.t0_to_first_disconnect_ms = first_disconnect.map(|at| signed_ms(t0, at));
        report.reconnect_after_t0 = Percentiles::from_samples(&after_t0);
        report.t0_to_last_reconnect_ms = report.reconnect_after_t0.map(|stats| stats.max);
        report.offline_per_device = Percentiles::from_samples(&offline);
    }

    /// Counts MQTT 5.0 devices whose failover disconnection did not carry 0x9C Use another server.
    pub fn v5_without_use_another_server(&self) -> usize {
        self.count(|state| {
            state.protocol.is_v5()
                && state
                    .first_disconnect
                    .is_some_and(|(_, reason)| reason != Some(ReasonCode::USE_ANOTHER_SERVER))
        })
    }
}

/// Names a protocol and a disconnect reason, e.g. `MQTT 5.0 0x9C`.
pub fn reason_label(protocol: ProtocolVersion, reason: Option<ReasonCode>) -> String {
    let protocol = protocol_name(protocol);
    match reason {
        Some(code) => format!("{protocol} 0x{:02X}", code.0),
        None => format!("{protocol} closed without DISCONNECT"),
    }
}

/// Returns the protocol's usual name, e.g. `MQTT 3.1.1`.
pub fn protocol_name(protocol: ProtocolVersion) -> &'static str {
    match protocol {
        ProtocolVersion::V3_1 => "MQTT 3.1",
        ProtocolVersion::V3_1_1 => "MQTT 3.1.1",
        ProtocolVersion::V5 => "MQTT 5.0",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(base: Instant, millis: u64) -> Instant {
        base + Duration::from_millis(millis)
    }

    #[test]
    fn tracker_counts_failover_and_early_disconnects() {
        let base = Instant::now();
        let mut tracker = Tracker::new([ProtocolVersion::V5, ProtocolVersion::V3_1_1]);
        tracker.apply(DeviceEvent::Ready {
            device: 0,
            at: base,
        });
        tracker.apply(DeviceEvent::Ready {
            device: 1,
            at: base,
        });
        tracker.apply(DeviceEvent::Lost {
            device: 1,
            at: ms(base, 5),
            reason: None,
        });
        tracker.downgrade_sent_at = Some(ms(base, 10));
        tracker.apply(DeviceEvent::Lost {
            device: 0,
            at: ms(base, 12),
            reason: Some(ReasonCode::USE_ANOTHER_SERVER),
        });
        assert_eq!(tracker.disconnections_before_downgrade, 1);
        assert_eq!(tracker.devices[0].disconnects_after_downgrade, 1);
        assert_eq!(tracker.devices[1].disconnects_after_downgrade, 0);
        assert!(!tracker.all_reconnected());
    }

    #[test]
    fn tracker_reconnects_only_after_resubscribe() {
        let base = Instant::now();
        let mut tracker = Tracker::new([ProtocolVersion::V5]);
        tracker.apply(DeviceEvent::Ready {
            device: 0,
            at: base,
        });
        tracker.downgrade_sent_at = Some(base);
        tracker.apply(DeviceEvent::Lost {
            device: 0,
            at: ms(base, 1),
            reason: Some(ReasonCode::USE_ANOTHER_SERVER),
        });
        tracker.apply(DeviceEvent::Reconnected {
            device: 0,
            at: ms(base, 3),
        });
        assert!(!tracker.all_reconnected());
        tracker.apply(DeviceEvent::Resubscribed { device: 0 });
        assert!(tracker.all_reconnected());
        assert_eq!(tracker.devices[0].reconnected_at, Some(ms(base, 3)));
    }

    #[test]
    fn figures_from_two_devices() {
        let base = Instant::now();
        let mut tracker = Tracker::new([ProtocolVersion::V5, ProtocolVersion::V3_1_1]);
        tracker.downgrade_sent_at = Some(base);
        let t0 = ms(base, 10);

        // Device 0 is disconnected before the response arrives, device 1 after it.
        let timeline = [
            (0, 8, Some(ReasonCode::USE_ANOTHER_SERVER), 30),
            (1, 20, None, 70),
        ];
        for (device, lost, reason, connack) in timeline {
            tracker.apply(DeviceEvent::Ready { device, at: base });
            tracker.apply(DeviceEvent::Lost {
                device,
                at: ms(base, lost),
                reason,
            });
            tracker.apply(DeviceEvent::Reconnected {
                device,
                at: ms(base, connack),
            });
            tracker.apply(DeviceEvent::Resubscribed { device });
        }

        let mut report = Report::default();
        tracker.fill_failover_figures(t0, &mut report);
        assert_eq!(report.disconnected_devices, 2);
        assert_eq!(report.disconnections, 2);
        assert_eq!(report.t0_to_first_disconnect_ms, Some(-2.0));
        assert_eq!(report.t0_to_last_reconnect_ms, Some(60.0));

        let after_t0 = report.reconnect_after_t0.unwrap();
        assert_eq!(after_t0.p50, 20.0);
        assert_eq!(after_t0.max, 60.0);

        let offline = report.offline_per_device.unwrap();
        assert_eq!(offline.p50, 22.0);
        assert_eq!(offline.max, 50.0);

        assert_eq!(
            report.reason_codes,
            vec![
                ("MQTT 3.1.1 closed without DISCONNECT".to_owned(), 1),
                ("MQTT 5.0 0x9C".to_owned(), 1),
            ]
        );
        assert_eq!(tracker.v5_without_use_another_server(), 0);
    }

    #[test]
    fn v5_other_reason_is_counted() {
        let base = Instant::now();
        let mut tracker = Tracker::new([ProtocolVersion::V5, ProtocolVersion::V5]);
        tracker.downgrade_sent_at = Some(base);
        tracker.apply(DeviceEvent::Lost {
            device: 0,
            at: base,
            reason: Some(ReasonCode::SERVER_SHUTTING_DOWN),
        });
        tracker.apply(DeviceEvent::Lost {
            device: 1,
            at: base,
            reason: None,
        });
        assert_eq!(tracker.v5_without_use_another_server(), 2);
    }

    #[test]
    fn failure_and_errors_are_kept() {
        let mut tracker = Tracker::new([ProtocolVersion::V5, ProtocolVersion::V5]);
        tracker.apply(DeviceEvent::AttemptFailed {
            device: 1,
            error: "connection refused".to_owned(),
        });
        tracker.apply(DeviceEvent::Failed {
            device: 0,
            error: "CONNACK 0x86".to_owned(),
        });
        tracker.apply(DeviceEvent::Failed {
            device: 1,
            error: "CONNACK 0x87".to_owned(),
        });
        assert_eq!(tracker.failed_attempts, 1);
        assert_eq!(tracker.first_failure, Some((0, "CONNACK 0x86".to_owned())));
        let example = tracker.example(|state| !state.ready);
        assert!(example.contains("bench-0"), "{example}");
        assert!(example.contains("CONNACK 0x86"), "{example}");
    }
}
