//! Results of `qos1-throughput` cases and their summary: one Markdown table per publisher
//! count with the median over rounds, ratios between variants, and one JSON line.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::report::Percentiles;

/// The figures of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub variant: String,
    /// The round, from 1.
    pub round: usize,
    pub publishers: usize,
    pub messages: usize,
    /// From the publishers' common start to the last PUBACK.
    pub publish_phase: Duration,
    /// PUBLISH to PUBACK per message, in milliseconds.
    pub latency: Option<Percentiles>,
    pub online_received: usize,
    /// Messages the online subscriber received more than once.
    pub duplicates: usize,
    pub offline_received: Option<usize>,
    /// From the offline subscriber's reconnection to its last message.
    pub drain: Option<Duration>,
}

impl CaseResult {
    /// Acknowledged messages per second over the publish phase.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.publish_phase.as_secs_f64().max(1e-9)
    }

    /// Formats the case as one progress line.
    pub fn to_line(&self) -> String {
        let (p50, p99) = self.latency.map_or((0.0, 0.0), |l| (l.p50, l.p99));
        let mut line = format!(
            "{:.0} messages/s ({} in {:.3} s), PUBACK p50 {p50:.2} ms p99 {p99:.2} ms, online \
             subscriber {} of {}",
            self.rate(),
            self.messages,
            self.publish_phase.as_secs_f64(),
            self.online_received,
            self.messages
        );
        if let (Some(received), Some(drain)) = (self.offline_received, self.drain) {
            let _ = write!(
                line,
                ", offline subscriber {received} of {} in {:.3} s",
                self.messages,
                drain.as_secs_f64()
            );
        }
        line
    }

    fn to_json(&self) -> Value {
        json!({
            "variant": self.variant,
            "round": self.round,
            "publishers": self.publishers,
            "messages": self.messages,
            "publish_phase_s": self.publish_phase.as_secs_f64(),
            "messages_per_second": self.rate().round(),
            "puback_ms": self.latency.map(|l| json!({"p50": l.p50, "p99": l.p99, "max": l.max})),
            "online_received": self.online_received,
            "duplicates": self.duplicates,
            "offline_received": self.offline_received,
            "drain_s": self.drain.map(|d| d.as_secs_f64()),
        })
    }
}

/// Prints one Markdown table per publisher count, then the ratios listed in `pairs`, then one
/// JSON line with every case. A table row has a variant's median messages/s over the rounds
/// with their range, its median PUBACK p50 and p99, and its ratio to `reference`.
pub fn print_summary(results: &[CaseResult], reference: Option<&str>, pairs: &[(&str, &str)]) {
    let mut publisher_counts: Vec<usize> = results.iter().map(|r| r.publishers).collect();
    publisher_counts.sort_unstable();
    publisher_counts.dedup();
    let mut variants: Vec<&str> = Vec::new();
    for result in results {
        if !variants.contains(&result.variant.as_str()) {
            variants.push(&result.variant);
        }
    }

    for &publishers in &publisher_counts {
        println!("\n{publishers} publishers:\n");
        let reference_label = reference.unwrap_or("-");
        println!(
            "| variant | messages/s, median (min to max) | PUBACK p50 / p99 ms \
             | / {reference_label} |"
        );
        println!("|---|---|---|---|");
        let reference_rate = reference.and_then(|label| median_rate(results, label, publishers));
        for &variant in &variants {
            let cases: Vec<&CaseResult> = results
                .iter()
                .filter(|r| r.variant == variant && r.publishers == publishers)
                .collect();
            let Some(rate) = median_rate(results, variant, publishers) else {
                continue;
            };
            let rates: Vec<f64> = cases.iter().map(|r| r.rate()).collect();
            let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rates.iter().copied().fold(0.0, f64::max);
            let p50 = median(
                cases
                    .iter()
                    .filter_map(|r| r.latency.map(|l| l.p50))
                    .collect(),
            );
            let p99 = median(
                cases
                    .iter()
                    .filter_map(|r| r.latency.map(|l| l.p99))
                    .collect(),
            );
            let ratio = reference_rate.map_or("-".to_owned(), |base| format!("{:.2}", rate / base));
            println!(
                "| {variant} | {rate:.0} ({low:.0} to {high:.0}) | {:.2} / {:.2} | {ratio} |",
                p50.unwrap_or(0.0),
                p99.unwrap_or(0.0)
            );
        }
        for (numerator, denominator) in pairs {
            let top = median_rate(results, numerator, publishers);
            let bottom = median_rate(results, denominator, publishers);
            if let (Some(top), Some(bottom)) = (top, bottom) {
                println!(
                    "\n{numerator} / {denominator} with {publishers} publishers: {:.2}",
                    top / bottom
                );
            }
        }
    }
    let cases: Vec<Value> = results.iter().map(CaseResult::to_json).collect();
    println!("{}", json!({ "cases": cases }));
}

fn median_rate(results: &[CaseResult], variant: &str, publishers: usize) -> Option<f64> {
    median(
        results
            .iter()
            .filter(|r| r.variant == variant && r.publishers == publishers)
            .map(CaseResult::rate)
            .collect(),
    )
}

/// Returns the median, the mean of the two middle values for an even count.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_mean_of_middle() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_of_odd_count_is_middle() {
        assert_eq!(median(vec![9.0, 1.0, 5.0]), Some(5.0));
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(Vec::new()), None);
    }
}
