//! The `dr-failover` benchmark: connect devices through the global endpoint, downgrade their
//! member, measure how fast they all reconnect, check that they landed on the survivor, and
//! recover the member.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_codec::{ProtocolVersion, ReasonCode};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::ApiClient;
use crate::connection::Connection;
use crate::device::{DeviceEvent, DeviceSettings, device_login, run_device, signature_login};
use crate::report::{Report, signed_ms};
use crate::tracker::Tracker;

/// Capacity of the channel from device tasks to the coordinator, in events. Devices wait when it
/// is full, so it bounds memory, not correctness.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// How often a waiting phase prints its progress to stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// How long devices get to send DISCONNECT and close after the run before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// MQTT versions of the devices of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolMix {
    V5,
    V3_1_1,
    /// Even-numbered devices use MQTT 5.0, odd-numbered ones 3.1.1.
    Mixed,
}

impl ProtocolMix {
    /// Returns the protocol of device `index`.
    pub fn for_device(self, index: usize) -> ProtocolVersion {
        match self {
            ProtocolMix::V5 => ProtocolVersion::V5,
            ProtocolMix::V3_1_1 => ProtocolVersion::V3_1_1,
            ProtocolMix::Mixed if index.is_multiple_of(2) => ProtocolVersion::V5,
            ProtocolMix::Mixed => ProtocolVersion::V3_1_1,
        }
    }
}

/// Settings of one `dr-failover` run.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    pub global_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// Member named in the devices' usernames; it is downgraded.
    pub instance: String,
    /// Member the devices should land on, and its region listener.
    pub survivor: String,
    pub survivor_addr: SocketAddr,
    pub devices: usize,
    pub group_id: String,
    pub topic_prefix: String,
    pub protocol: ProtocolMix,
    /// Upper bound of every phase.
    pub timeout: Duration,
    pub recover: bool,
    /// Devices that may be connecting at once during the first connection ramp.
    pub connect_concurrency: usize,
}

/// Runs the benchmark and returns its report; `report.failure` names the phase that failed.
pub async fn run(options: &FailoverOptions) -> Report {
    let mut report = Report {
        devices: options.devices,
        survivor: options.survivor.clone(),
        ..Report::default()
    };
    let protocols: Vec<ProtocolVersion> = (0..options.devices)
        .map(|index| options.protocol.for_device(index))
        .collect();
    report.devices_v5 = protocols.iter().filter(|p| p.is_v5()).count();
    report.devices_v311 = options.devices - report.devices_v5;

    let marker = Bytes::from(format!(
        "switchyard-loadgen landing check {}",
        uuid::Uuid::new_v4()
    ));
    let settings = Arc::new(DeviceSettings {
        global_addr: options.global_addr,
        topic_filter: format!("{}/all", options.topic_prefix),
        marker: marker.clone(),
        exchange_timeout: options.timeout.min(Duration::from_secs(10)),
    });
    let api = ApiClient {
        addr: options.api_addr,
        access_key_id: options.access_key_id.clone(),
        access_key_secret: options.access_key_secret.clone(),
        timeout: options.timeout,
    };

    let (events_tx, mut events) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let (stop_tx, stop) = watch::channel(false);
    let ramp = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut tracker = Tracker::new(protocols.iter().copied());
    let mut tasks = JoinSet::new();

    eprintln!(
        "phase connect: connecting {} devices to {} ({} at a time)",
        options.devices, options.global_addr, options.connect_concurrency
    );
    let connect_started = Instant::now();
    for (index, protocol) in protocols.iter().enumerate() {
        let login = device_login(
            index,
            &options.group_id,
            &options.access_key_id,
            &options.access_key_secret,
            &options.instance,
            *protocol,
        );
        tasks.spawn(run_device(
            index,
            login,
            settings.clone(),
            ramp.clone(),
            events_tx.clone(),
            stop.clone(),
        ));
    }
    drop(events_tx);

    let mut downgraded = false;
    let outcome = run_phases(
        options,
        &api,
        &marker,
        connect_started,
        &mut tracker,
        &mut events,
        &mut report,
        &mut downgraded,
    )
    .await;
    if let Err(failure) = outcome {
        report.failure = Some(failure);
    }
    report.failed_attempts = tracker.failed_attempts;

    if downgraded && options.recover {
        eprintln!(
            "phase recover: calling DisasterRecovery for {}",
            options.instance
        );
        let params = [
            ("InstanceId", options.instance.as_str()),
            ("RecoveryInstanceId", options.instance.as_str()),
        ];
        match api.call("DisasterRecovery", &params).await {
            Ok(response) => report.recovery_request_id = Some(response.request_id),
            Err(error) => {
                report
                    .failure
                    .get_or_insert(format!("phase recover: {error:#}"));
            }
        }
    }

    let _ = stop_tx.send(true);
    let drain = async {
        loop {
            tokio::select! {
                joined = tasks.join_next() => if joined.is_none() { break },
                Some(_) = events.recv() => {}
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
    }
    report
}

/// Runs phases connect, downgrade, reconnect and verify. Sets `downgraded` once
/// DisasterDowngrade succeeded, so the caller knows to recover even after a later failure.
#[allow(clippy::too_many_arguments)]
async fn run_phases(
    options: &FailoverOptions,
    api: &ApiClient,
    marker: &Bytes,
    connect_started: Instant,
    tracker: &mut Tracker,
    events: &mut mpsc::Receiver<DeviceEvent>,
    report: &mut Report,
    downgraded: &mut bool,
) -> Result<(), String> {
    let devices = options.devices;
    let timeout = options.timeout;

    // Phase connect: every device connected and subscribed.
    let deadline = connect_started + timeout;
    pump_until(tracker, events, deadline, |t| {
        t.count(|d| d.ready) == devices
    })
    .await
    .map_err(|end| {
        let missing = devices - tracker.count(|d| d.ready);
        let example = tracker.example(|d| !d.ready);
        format!(
            "phase connect {end}: {missing} of {devices} devices did not connect and \
                 subscribe{example}"
        )
    })?;
    let connect_phase = tracker
        .last_ready_at
        .map_or_else(|| connect_started.elapsed(), |last| last - connect_started);
    report.connect_phase = Some(connect_phase);
    eprintln!(
        "phase connect: {devices} devices subscribed in {:.3} s",
        connect_phase.as_secs_f64()
    );

    // Phase downgrade: events keep arriving while the request is in flight, because the server
    // may start disconnecting devices before its response is written.
    eprintln!(
        "phase downgrade: calling DisasterDowngrade for {}",
        options.instance
    );
    let params = [
        ("InstanceId", options.instance.as_str()),
        ("DowngradeInstanceId", options.instance.as_str()),
    ];
    tracker.downgrade_sent_at = Some(Instant::now());
    let call = api.call("DisasterDowngrade", &params);
    tokio::pin!(call);
    let response = loop {
        tokio::select! {
            biased;
            result = &mut call => break result,
            Some(event) = events.recv() => tracker.apply(event),
        }
    };
    let response = response.map_err(|error| format!("phase downgrade: {error:#}"))?;
    *downgraded = true;
    let t0 = response.received_at;
    report.downgrade_round_trip = Some(response.received_at - response.sent_at);
    report.downgrade_request_id = Some(response.request_id);

    // Phase reconnect: every device disconnected by the failover and subscribed again.
    eprintln!("phase reconnect: waiting for {devices} devices to be moved");
    let waited = pump_until(tracker, events, t0 + timeout, Tracker::all_reconnected).await;
    tracker.fill_failover_figures(t0, report);
    waited.map_err(|end| {
        let not_disconnected = tracker.count(|d| d.disconnects_after_downgrade == 0);
        let not_back = tracker.count(|d| d.disconnects_after_downgrade > 0 && !d.subscribed);
        let example = tracker.example(|d| d.disconnects_after_downgrade > 0 && !d.subscribed);
        format!(
            "phase reconnect {end}: {not_disconnected} of {devices} devices were not \
             disconnected and {not_back} disconnected devices did not reconnect and \
             resubscribe{example}"
        )
    })?;
    let wrong_reason = tracker.v5_without_use_another_server();
    if wrong_reason > 0 {
        return Err(format!(
            "phase reconnect: {wrong_reason} of {} MQTT 5.0 devices were disconnected without \
             reason code 0x9C Use another server (see disconnect reasons)",
            report.devices_v5
        ));
    }
    eprintln!(
        "phase reconnect: all {devices} devices reconnected, the last {:.1} ms after the response",
        report.t0_to_last_reconnect_ms.unwrap_or_default()
    );

    // Phase verify: a message published on the survivor's region listener reaches every device.
    verify_landing(options, marker, tracker, events, report).await
}

async fn verify_landing(
    options: &FailoverOptions,
    marker: &Bytes,
    tracker: &mut Tracker,
    events: &mut mpsc::Receiver<DeviceEvent>,
    report: &mut Report,
) -> Result<(), String> {
    let devices = options.devices;
    let protocol = match options.protocol {
        ProtocolMix::V3_1_1 => ProtocolVersion::V3_1_1,
        ProtocolMix::V5 | ProtocolMix::Mixed => ProtocolVersion::V5,
    };
    let login = signature_login(
        format!("{}@@@bench-publisher", options.group_id),
        &options.access_key_id,
        &options.access_key_secret,
        &options.survivor,
        protocol,
    );
    let topic = format!("{}/all", options.topic_prefix);
    eprintln!(
        "phase verify: publishing one QoS 1 message to {topic} on {} at {}",
        options.survivor, options.survivor_addr
    );
    let exchange_timeout = options.timeout.min(Duration::from_secs(10));
    let (mut publisher, _) = Connection::open(options.survivor_addr, &login, exchange_timeout)
        .await
        .map_err(|error| {
            format!(
                "phase verify: the publisher could not connect to {} at {}: {error}",
                options.survivor, options.survivor_addr
            )
        })?;
    let published_at = Instant::now();
    let acknowledged = publisher
        .publish_qos1(&topic, marker.clone(), exchange_timeout)
        .await;
    publisher.close().await;
    let reason = acknowledged
        .map_err(|error| format!("phase verify: publishing to {topic} failed: {error}"))?;
    if reason.is_error() {
        return Err(format!(
            "phase verify: PUBACK rejected the message with reason code 0x{:02X}",
            reason.0
        ));
    }
    if reason == ReasonCode::NO_MATCHING_SUBSCRIBERS {
        return Err(format!(
            "phase verify: {devices} of {devices} devices are missing on {}: PUBACK reports no \
             matching subscribers",
            options.survivor
        ));
    }

    let waited = pump_until(tracker, events, published_at + options.timeout, |t| {
        t.count(|d| d.received_at.is_some()) == devices
    })
    .await;
    let landed = tracker.count(|d| d.received_at.is_some());
    report.landed_devices = Some(landed);
    report.publish_to_last_receipt_ms = tracker
        .devices
        .iter()
        .filter_map(|d| d.received_at)
        .max()
        .map(|last| signed_ms(published_at, last));
    waited.map_err(|end| {
        format!(
            "phase verify {end}: {} of {devices} devices did not receive the message published \
             on {}",
            devices - landed,
            options.survivor
        )
    })?;
    eprintln!("phase verify: all {devices} devices received the message");
    Ok(())
}

#[cfg(test)]
mod tests;

/// Reason a wait ended before its condition held.
enum WaitEnd {
    TimedOut(Duration),
    DeviceFailed(usize, String),
    AllTasksEnded,
}

impl Display for WaitEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitEnd::TimedOut(after) => write!(f, "timed out after {:.1} s", after.as_secs_f64()),
            WaitEnd::DeviceFailed(device, error) => {
                write!(f, "failed because bench-{device} gave up ({error})")
            }
            WaitEnd::AllTasksEnded => f.write_str("failed because every device task ended"),
        }
    }
}

/// Applies device events until `done` holds, a device gives up, or `deadline` passes. Prints
/// the number of devices for which `done` is still pending every [`PROGRESS_INTERVAL`].
async fn pump_until(
    tracker: &mut Tracker,
    events: &mut mpsc::Receiver<DeviceEvent>,
    deadline: Instant,
    done: impl Fn(&Tracker) -> bool,
) -> Result<(), WaitEnd> {
    let started = Instant::now();
    let mut progress = tokio::time::interval_at(started + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    loop {
        if let Some((device, error)) = &tracker.first_failure {
            return Err(WaitEnd::DeviceFailed(*device, error.clone()));
        }
        if done(tracker) {
            return Ok(());
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => tracker.apply(event),
                None => return Err(WaitEnd::AllTasksEnded),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(WaitEnd::TimedOut(started.elapsed()));
            }
            _ = progress.tick() => {
                eprintln!(
                    "  ... {:.0} s: {} subscribed, {} moved and back, {} failed attempts",
                    started.elapsed().as_secs_f64(),
                    tracker.count(|d| d.subscribed),
                    tracker.count(|d| d.disconnects_after_downgrade > 0 && d.subscribed),
                    tracker.failed_attempts
                );
            }
        }
    }
}
