//! Figures of a DR failover run, their statistics, and the two output forms: a human-readable
//! report and one JSON line.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// Nearest-rank percentiles of a set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
}

impl Percentiles {
    /// Computes the percentiles of `samples`; returns `None` for an empty set.
    ///
    /// Uses the nearest-rank method: the p-th percentile is the smallest sample such that at
    /// least p % of the samples are less than or equal to it, so every figure is a measured value.
    pub fn from_samples(samples: &[f64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |percent: f64| {
            let position = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
            sorted[position.clamp(1, sorted.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            count: sorted.len(),
        })
    }

    fn to_json(self) -> Value {
        json!({
            "p50": round_ms(self.p50),
            "p90": round_ms(self.p90),
            "p99": round_ms(self.p99),
            "max": round_ms(self.max),
            "count": self.count,
        })
    }
}

/// Signed milliseconds from `from` to `to`; negative when `to` came first.
pub fn signed_ms(from: tokio::time::Instant, to: tokio::time::Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

fn round_ms(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn duration_ms(duration: Duration) -> f64 {
    round_ms(duration.as_secs_f64() * 1000.0)
}

/// Everything a run measured. Fields stay `None` for phases that did not run.
#[derive(Debug, Default)]
pub struct Report {
    pub devices: usize,
    pub devices_v5: usize,
    pub devices_v311: usize,
    /// From the first connection attempt until every device was subscribed.
    pub connect_phase: Option<Duration>,
    /// DisasterDowngrade round trip, request written to response read.
    pub downgrade_round_trip: Option<Duration>,
    pub downgrade_request_id: Option<String>,
    /// Devices disconnected at least once after the DisasterDowngrade request was sent.
    pub disconnected_devices: usize,
    /// Disconnections after the request, counting a device again if it was disconnected twice.
    pub disconnections: usize,
    /// Disconnections before the request was sent, which the failover did not cause.
    pub disconnections_before_downgrade: usize,
    /// `(protocol, reason)` of each device's first disconnection after the request, with counts.
    pub reason_codes: Vec<(String, usize)>,
    /// Signed milliseconds from T0 (DisasterDowngrade response) to the first disconnection.
    pub t0_to_first_disconnect_ms: Option<f64>,
    /// Signed milliseconds from T0 to the last device's reconnection CONNACK: the headline.
    pub t0_to_last_reconnect_ms: Option<f64>,
    /// Per device, T0 to its reconnection CONNACK.
    pub reconnect_after_t0: Option<Percentiles>,
    /// Per device, its first disconnection to its reconnection CONNACK.
    pub offline_per_device: Option<Percentiles>,
    /// Connection attempts that failed and were retried, over the whole run.
    pub failed_attempts: u64,
    /// Member the verification message was published on.
    pub survivor: String,
    /// Devices that received the verification message.
    pub landed_devices: Option<usize>,
    /// From the verification PUBLISH being sent to the last device receiving it.
    pub publish_to_last_receipt_ms: Option<f64>,
    pub recovery_request_id: Option<String>,
    /// The first phase that failed, with what was missing.
    pub failure: Option<String>,
}

impl Report {
    /// Formats the report for a terminal, one figure per line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(text, "  {label:<30} {value}");
        };
        line(
            "devices",
            format!(
                "{} ({} MQTT 5.0, {} MQTT 3.1.1)",
                self.devices, self.devices_v5, self.devices_v311
            ),
        );

        if let Some(phase) = self.connect_phase {
            let rate = self.devices as f64 / phase.as_secs_f64().max(1e-9);
            line(
                "connect phase",
                format!("{:.3} s ({rate:.0} connections/s)", phase.as_secs_f64()),
            );
        }

        if let Some(round_trip) = self.downgrade_round_trip {
            line(
                "DisasterDowngrade round trip",
                format!(
                    "{:.1} ms, RequestId {}",
                    round_trip.as_secs_f64() * 1000.0,
                    self.downgrade_request_id.as_deref().unwrap_or("-")
                ),
            );
        }

        line(
            "disconnected devices",
            format!(
                "{} of {} ({} disconnections, {} before the downgrade)",
                self.disconnected_devices,
                self.devices,
                self.disconnections,
                self.disconnections_before_downgrade
            ),
        );
        if !self.reason_codes.is_empty() {
            let codes: Vec<String> = self
                .reason_codes
                .iter()
                .map(|(label, count)| format!("{label}: {count}"))
                .collect();
            line("disconnect reasons", codes.join(", "));
        }
        if self.downgrade_round_trip.is_some() {
            line(
                "T0",
                "the instant the DisasterDowngrade response arrived".to_owned(),
            );
        }
        if let Some(ms) = self.t0_to_first_disconnect_ms {
            line("T0 to first disconnection", format!("{ms:.1} ms"));
        }
        if let Some(ms) = self.t0_to_last_reconnect_ms {
            line("T0 to last reconnection", format!("{ms:.1} ms"));
        }
        if let Some(stats) = self.reconnect_after_t0 {
            line("T0 to reconnection per device", format_percentiles(stats));
        }
        if let Some(stats) = self.offline_per_device {
            line("offline time per device", format_percentiles(stats));
        }

        line(
            "failed connection attempts",
            format!("{} (retried)", self.failed_attempts),
        );

        if let Some(landed) = self.landed_devices {
            let timing = self.publish_to_last_receipt_ms.map_or(String::new(), |ms| {
                format!(", last receipt {ms:.1} ms after PUBLISH")
            });
            line(
                "landed on survivor",
                format!(
                    "{landed} of {} devices received the message published on {}{timing}",
                    self.devices, self.survivor
                ),
            );
        }

        if let Some(request_id) = &self.recovery_request_id {
            line(
                "DisasterRecovery",
                format!("succeeded, RequestId {request_id}"),
            );
        }

        match &self.failure {
            Some(failure) => line("result", format!("FAILED: {failure}")),
            None => line("result", "ok".to_owned()),
        }
        text
    }

    /// Builds the JSON object of every figure; times are milliseconds.
    pub fn to_json(&self) -> Value {
        let reason_codes: serde_json::Map<String, Value> = self
            .reason_codes
            .iter()
            .map(|(label, count)| (label.clone(), json!(count)))
            .collect();
        json!({
            "benchmark": "dr-failover",
            "ok": self.failure.is_none(),
            "failure": self.failure,
            "devices": self.devices,
            "devices_mqtt5": self.devices_v5,
            "devices_mqtt311": self.devices_v311,
            "connect_phase_ms": self.connect_phase.map(duration_ms),
            "downgrade_round_trip_ms": self.downgrade_round_trip.map(duration_ms),
            "downgrade_request_id": self.downgrade_request_id,
            "disconnected_devices": self.disconnected_devices,
            "disconnections": self.disconnections,
            "disconnections_before_downgrade": self.disconnections_before_downgrade,
            "reason_codes": reason_codes,
            "t0_to_first_disconnect_ms": self.t0_to_first_disconnect_ms.map(round_ms),
            "t0_to_last_reconnect_ms": self.t0_to_last_reconnect_ms.map(round_ms),
            "reconnect_after_t0_ms": self.reconnect_after_t0.map(Percentiles::to_json),
            "offline_per_device_ms": self.offline_per_device.map(Percentiles::to_json),
            "failed_connection_attempts": self.failed_attempts,
            "survivor": self.survivor,
            "landed_devices": self.landed_devices,
            "publish_to_last_receipt_ms": self.publish_to_last_receipt_ms.map(round_ms),
            "recovery_request_id": self.recovery_request_id,
        })
    }
}

fn format_percentiles(stats: Percentiles) -> String {
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} devices)",
        stats.p50, stats.p90, stats.p99, stats.max, stats.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_empty_is_none() {
        assert_eq!(Percentiles::from_samples(&[]), None);
    }

    #[test]
    fn percentiles_single_sample() {
        let stats = Percentiles::from_samples(&[7.5]).unwrap();
        assert_eq!(stats.p50, 7.5);
        assert_eq!(stats.p90, 7.5);
        assert_eq!(stats.p99, 7.5);
        assert_eq!(stats.max, 7.5);
        assert_eq!(stats.count, 1);
    }

    #[test]
    fn percentiles_nearest_rank_of_hundred() {
        // 1..=100 in reverse order, so the input order must not matter.
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let stats = Percentiles::from_samples(&samples).unwrap();
        assert_eq!(stats.p50, 50.0);
        assert_eq!(stats.p90, 90.0);
        assert_eq!(stats.p99, 99.0);
        assert_eq!(stats.max, 100.0);
        assert_eq!(stats.count, 100);
    }

    #[test]
    fn percentiles_rounds_rank_up() {
        // Nearest rank of p50 over 5 samples is ceil(2.5) = 3, p90 is ceil(4.5) = 5.
        let stats = Percentiles::from_samples(&[10.0, 20.0, 30.0, 40.0, 50.0]).unwrap();
        assert_eq!(stats.p50, 30.0);
        assert_eq!(stats.p90, 50.0);
        assert_eq!(stats.p99, 50.0);
    }

    #[test]
    fn percentiles_keep_negative_values() {
        let stats = Percentiles::from_samples(&[-2.0, 1.0, 3.0]).unwrap();
        assert_eq!(stats.p50, 1.0);
        assert_eq!(stats.max, 3.0);
    }

    #[test]
    fn signed_ms_both_directions() {
        let start = tokio::time::Instant::now();
        let later = start + Duration::from_millis(250);
        assert_eq!(signed_ms(start, later), 250.0);
        assert_eq!(signed_ms(later, start), -250.0);
    }

    #[test]
    fn json_has_every_figure() {
        let report = Report {
            devices: 4,
            devices_v5: 2,
            devices_v311: 2,
            connect_phase: Some(Duration::from_millis(120)),
            disconnected_devices: 4,
            disconnections: 4,
            reason_codes: vec![("MQTT 5.0 0x9C".to_owned(), 2)],
            t0_to_last_reconnect_ms: Some(12.3456),
            reconnect_after_t0: Percentiles::from_samples(&[1.0, 2.0, 3.0, 12.3456]),
            landed_devices: Some(4),
            survivor: "mqtt-cn-sh01".to_owned(),
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["ok"], true);
        assert_eq!(json["failure"], Value::Null);
        assert_eq!(json["devices"], 4);
        assert_eq!(json["connect_phase_ms"], 120.0);
        assert_eq!(json["t0_to_last_reconnect_ms"], 12.346);
        assert_eq!(json["reconnect_after_t0_ms"]["max"], 12.346);
        assert_eq!(json["reason_codes"]["MQTT 5.0 0x9C"], 2);
        assert_eq!(json["landed_devices"], 4);
        assert_eq!(json["t0_to_first_disconnect_ms"], Value::Null);
    }

    #[test]
    fn text_shows_failure() {
        let report = Report {
            devices: 10,
            failure: Some("phase reconnect timed out".to_owned()),
            ..Report::default()
        };
        let text = report.to_text();
        assert!(text.contains("FAILED: phase reconnect timed out"), "{text}");
        assert_eq!(report.to_json()["ok"], false);
    }
}
