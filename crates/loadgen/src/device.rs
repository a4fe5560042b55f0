//! One simulated device: it connects through the global endpoint, subscribes, acknowledges what
//! it receives, and reconnects at once whenever the server disconnects it, reporting every step
//! to the coordinator as a [`DeviceEvent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::connection::{ClientError, Connection, Login};

/// First delay after a failed connection attempt; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Settings shared by every device of a run.
pub struct DeviceSettings {
    /// Global endpoint every device connects and reconnects through.
    pub global_addr: SocketAddr,
    pub topic_filter: String,
    /// Payload of the verification message; devices report each PUBLISH that carries it.
    pub marker: Bytes,
    /// Bound on one CONNECT/CONNACK or SUBSCRIBE/SUBACK exchange.
    pub exchange_timeout: Duration,
}

/// Something that happened to one device, with the instant it happened.
#[derive(Debug)]
pub enum DeviceEvent {
    /// The first connection is up and its subscription acknowledged.
    Ready { device: usize, at: Instant },
    /// The server ended the connection. `reason` is the DISCONNECT reason code, or `None` when
    /// the connection closed without one (always the case for MQTT 3.1.1).
    Lost {
        device: usize,
        at: Instant,
        reason: Option<ReasonCode>,
    },
    /// A reconnection attempt received a successful CONNACK.
    Reconnected { device: usize, at: Instant },
    /// The reconnected device's subscription was acknowledged again.
    Resubscribed { device: usize },
    /// A connection attempt failed and will be retried.
    AttemptFailed { device: usize, error: String },
    /// The device gave up: its login or subscription was rejected, so retrying cannot help.
    Failed { device: usize, error: String },
    /// The verification message arrived.
    Received { device: usize, at: Instant },
}

/// End of one connected session.
enum SessionEnd {
    Stopped,
    Lost(Option<ReasonCode>),
}

/// Runs device `index` until `stop` turns true or its sender is dropped.
///
/// The first connection holds a permit of `ramp`, which bounds how many devices connect at
/// once. Reconnections do not, because they are paced by the server's disconnect rate.
pub async fn run_device(
    index: usize,
    login: Login,
    settings: Arc<DeviceSettings>,
    ramp: Arc<Semaphore>,
    events: mpsc::Sender<DeviceEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let first = {
        let Ok(_permit) = ramp.acquire().await else {
            return;
        };
        connect_with_retry(index, false, &login, &settings, &events, &mut stop).await
    };
    let Some((mut connection, at)) = first else {
        return;
    };
    if events
        .send(DeviceEvent::Ready { device: index, at })
        .await
        .is_err()
    {
        return;
    }

    loop {
        match run_session(
            index,
            &mut connection,
            &login,
            &settings,
            &events,
            &mut stop,
        )
        .await
        {
            SessionEnd::Stopped => {
                connection.close().await;
                return;
            }
            SessionEnd::Lost(reason) => {
                let event = DeviceEvent::Lost {
                    device: index,
                    at: Instant::now(),
                    reason,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
        match connect_with_retry(index, true, &login, &settings, &events, &mut stop).await {
            Some((reconnected, _)) => {
                connection = reconnected;
                if events
                    .send(DeviceEvent::Resubscribed { device: index })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            None => return,
        }
    }
}

/// Connects and subscribes, retrying transient failures with a doubling delay until it
/// succeeds, a failure is permanent, or `stop` is set. With `reconnecting`, every successful
/// CONNACK is reported as [`DeviceEvent::Reconnected`]. Returns the connection and the instant
/// its SUBACK arrived.
async fn connect_with_retry(
    index: usize,
    reconnecting: bool,
    login: &Login,
    settings: &DeviceSettings,
    events: &mpsc::Sender<DeviceEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Connection, Instant)> {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let attempt = async {
            let (mut connection, connack_at) =
                Connection::open(settings.global_addr, login, settings.exchange_timeout).await?;
            if reconnecting {
                let event = DeviceEvent::Reconnected {
                    device: index,
                    at: connack_at,
                };
                // A closed channel means the run is over; the stop signal ends the loop.
                let _ = events.send(event).await;
            }
            connection
                .subscribe(
                    &settings.topic_filter,
                    QoS::AtLeastOnce,
                    settings.exchange_timeout,
                )
                .await?;
            Ok::<_, ClientError>((connection, Instant::now()))
        };
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.changed() => return None,
        };
        let error = match result {
            Ok(connected) => return Some(connected),
            Err(error) => error,
        };
        if !error.is_transient() {
            let event = DeviceEvent::Failed {
                device: index,
                error: error.to_string(),
            };
            let _ = events.send(event).await;
            return None;
        }
        let event = DeviceEvent::AttemptFailed {
            device: index,
            error: error.to_string(),
        };
        if events.send(event).await.is_err() {
            return None;
        }
        // Spread retries of devices that failed together over a few milliseconds.
        let jitter = Duration::from_millis((index % 20) as u64);
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = stop.changed() => return None,
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Serves one connected session: acknowledges deliveries, reports the verification message,
/// sends PINGREQ every half keep-alive interval, and returns when the connection ends.
async fn run_session(
    index: usize,
    connection: &mut Connection,
    login: &Login,
    settings: &DeviceSettings,
    events: &mpsc::Sender<DeviceEvent>,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let ping_every = Duration::from_secs(u64::from(login.keep_alive.max(2) / 2));
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return SessionEnd::Stopped,
            _ = ping.tick() => {
                if connection.send(&Packet::PingReq).await.is_err() {
                    return SessionEnd::Lost(None);
                }
            }
            received = connection.receive() => {
                let packet = match received {
                    Ok(Some(packet)) => packet,
                    Ok(None) | Err(_) => return SessionEnd::Lost(None),
                };
                if let Packet::Disconnect(disconnect) = &packet {
                    return SessionEnd::Lost(Some(disconnect.reason));
                }
                if connection.acknowledge(&packet).await.is_err() {
                    return SessionEnd::Lost(None);
                }
                if let Packet::Publish(publish) = &packet
                    && publish.payload == settings.marker
                {
                    let event = DeviceEvent::Received { device: index, at: Instant::now() };
                    if events.send(event).await.is_err() {
                        return SessionEnd::Stopped;
                    }
                }
            }
        }
    }
}

/// Builds the login of device `index`: client id `<group>@@@bench-<index>`, a `Signature`
/// username naming `instance_id`, and MQTT 5.0 or 3.1.1 by `protocol`.
pub fn device_login(
    index: usize,
    group_id: &str,
    access_key_id: &str,
    access_key_secret: &str,
    instance_id: &str,
    protocol: ProtocolVersion,
) -> Login {
    let client_id = format!("{group_id}@@@bench-{index}");
    signature_login(
        client_id,
        access_key_id,
        access_key_secret,
        instance_id,
        protocol,
    )
}

/// Builds a `Signature|<AccessKeyId>|<InstanceId>` login with a 60 s keep-alive and a clean
/// session.
pub fn signature_login(
    client_id: String,
    access_key_id: &str,
    access_key_secret: &str,
    instance_id: &str,
    protocol: ProtocolVersion,
) -> Login {
    Login {
        password: crate::signing::device_password(access_key_secret, &client_id),
        username: format!("Signature|{access_key_id}|{instance_id}"),
        client_id,
        protocol,
        keep_alive: 60,
        clean_start: true,
        session_expiry: None,
    }
}
