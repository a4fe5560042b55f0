//! The `qos1-throughput` benchmark: QoS 1 publish throughput through real MQTT connections to
//! `switchyard serve`, for several server variants (durability policies, or another build),
//! each case on a fresh server with a fresh data directory.
//!
//! One case runs, in order:
//!
//! 1. an online subscriber with a persistent session (3.1.1, Clean Session 0) subscribes at
//!    QoS 1 and acknowledges everything it receives;
//! 2. an offline subscriber does the same and disconnects, so every message is queued in its
//!    stored session;
//! 3. the publishers (5.0, clean sessions) connect, wait for each other, and each sends its
//!    share of the messages at QoS 1 with at most `window` of them awaiting PUBACK;
//! 4. once the online subscriber has every message, the offline one reconnects, must find its
//!    session, and must receive every message too.
//!
//! Each payload starts with the message's index as a big-endian `u64`, so subscribers count
//! each message once and a lost message fails the case.

mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use switchyard_codec::{ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::connection::{Connection, Login};
use crate::device::signature_login;
use crate::report::Percentiles;
use crate::server::{GROUP_ID, Server, ServerConfig};

pub use summary::{CaseResult, print_summary};

/// The topic every publisher sends to and every subscriber subscribes to.
const TOPIC: &str = "sensors/bench/qos1";

/// The maximum number of queued messages the message store keeps for one session: the default
/// of `store.max_queued_messages_per_session`, which the benchmark's configuration leaves
/// unset. It bounds the offline subscriber's queue.
pub const MAX_OFFLINE_QUEUE: usize = 10_000;

/// Bound on one CONNECT/CONNACK or SUBSCRIBE/SUBACK exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server to measure: a binary and the durability policy its configuration names.
#[derive(Clone, Debug)]
pub struct Variant {
    /// The name in the report, such as `memory` or `before-store`.
    pub label: String,
    pub binary: PathBuf,
    /// The `store.durability` value, or `None` for a build without the key.
    pub durability: Option<String>,
}

/// Settings of one `qos1-throughput` run.
#[derive(Clone, Debug)]
pub struct Qos1Options {
    pub variants: Vec<Variant>,
    /// Concurrent publisher counts; every count runs against every variant.
    pub publishers: Vec<usize>,
    /// Messages per case, shared out between the publishers.
    pub messages: usize,
    pub payload_bytes: usize,
    /// Messages one publisher may have awaiting PUBACK.
    pub window: usize,
    pub rounds: usize,
    /// Whether the offline subscriber runs (step 2 and 4 of a case).
    pub offline_subscriber: bool,
    /// Directory under which each case gets its own configuration and data directory.
    pub work_dir: PathBuf,
    /// Upper bound of one case, start-up excluded.
    pub timeout: Duration,
    /// No case starts once this much time has passed since the run started.
    pub max_run_time: Duration,
    pub ready_timeout: Duration,
    pub access_key_id: String,
    pub access_key_secret: String,
}

/// Runs every case, interleaving the variants within each round and rotating their order
/// from round to round, and returns the results in the order they ran. Stops at the first
/// failed case and returns the results so far with the error.
pub fn run(
    options: &Qos1Options,
    runtime: &tokio::runtime::Runtime,
) -> (Vec<CaseResult>, Option<anyhow::Error>) {
    let mut results = Vec::new();
    let variant_count = options.variants.len();
    let run_started = std::time::Instant::now();
    for round in 0..options.rounds {
        for &publishers in &options.publishers {
            for position in 0..variant_count {
                let variant = &options.variants[(position + round) % variant_count];
                if run_started.elapsed() >= options.max_run_time {
                    let error = anyhow::anyhow!(
                        "stopped before case {} with {publishers} publishers, round {}: the run \
                         took longer than --max-run-time {} s",
                        variant.label,
                        round + 1,
                        options.max_run_time.as_secs()
                    );
                    return (results, Some(error));
                }
                eprintln!(
                    "round {} of {}: {} with {publishers} publishers",
                    round + 1,
                    options.rounds,
                    variant.label
                );
                match run_case(options, runtime, variant, publishers, round) {
                    Ok(result) => {
                        eprintln!("  {}", result.to_line());
                        results.push(result);
                    }
                    Err(error) => {
                        let error = error.context(format!(
                            "case {} with {publishers} publishers, round {} failed",
                            variant.label,
                            round + 1
                        ));
                        return (results, Some(error));
                    }
                }
            }
        }
    }
    (results, None)
}

/// Starts a fresh server for one case, runs the workload on it and stops it.
fn run_case(
    options: &Qos1Options,
    runtime: &tokio::runtime::Runtime,
    variant: &Variant,
    publishers: usize,
    round: usize,
) -> anyhow::Result<CaseResult> {
    let dir = options.work_dir.join(format!(
        "round{}-{}pub-{}",
        round + 1,
        publishers,
        variant.label
    ));
    let config = ServerConfig {
        access_key_id: options.access_key_id.clone(),
        access_key_secret: options.access_key_secret.clone(),
        durability: variant.durability.clone(),
        // Room for every message of the case, so the broker never drops the oldest.
        max_queued_messages: options.messages.max(1000),
        // Far above what one connection reaches here, so the limit never disconnects one.
        max_publish_rate: 10_000_000,
        max_connection_rate: 100_000,
    };

    let mut server = Server::start(
        &variant.binary,
        &dir,
        &config.to_toml(&dir.join("data")),
        options.ready_timeout,
    )?;
    let addr = server.instance_addr()?;

    let workload = Workload {
        addr,
        options: options.clone(),
        publishers,
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(options.timeout, workload.run())
            .await
            .unwrap_or_else(|_| {
                bail!(
                    "the case did not finish within --timeout {} s",
                    options.timeout.as_secs()
                )
            })
    });

    // A server that exited on its own invalidates the case even if the workload finished.
    let exited = !server.is_running();
    server.stop();
    if outcome.is_err() {
        eprintln!("end of the server log:\n{}", server.log_tail());
    }
    let mut result =
        outcome.with_context(|| format!("see the server log in {}", server.log_path.display()))?;
    if exited {
        bail!(
            "the server exited during the case; see {}",
            server.log_path.display()
        );
    }
    result.variant = variant.label.clone();
    result.round = round + 1;
    Ok(result)
}

/// One case's workload against a started server.
struct Workload {
    addr: std::net::SocketAddr,
    options: Qos1Options,
    publishers: usize,
}

impl Workload {
    async fn run(self) -> anyhow::Result<CaseResult> {
        let total = self.options.messages;

        // Steps 1 and 2: the two persistent subscriptions exist before anything is published.
        let online = self.subscribe("sub-online").await?;
        if self.options.offline_subscriber {
            self.subscribe("sub-offline").await?.close().await;
        }
        let online_task = tokio::spawn(receive_all(online, total));

        // Step 3.
        let (publish_phase, latencies) = self.publish_all().await?;
        let online_count = online_task.await.context("online subscriber panicked")??;
        if online_count.unique != total {
            bail!(
                "online subscriber received {} of {total} messages",
                online_count.unique
            );
        }

        // Step 4.
        let (offline_received, drain) = if self.options.offline_subscriber {
            let (received, drain) = self.drain_offline().await?;
            (Some(received), Some(drain))
        } else {
            (None, None)
        };

        Ok(CaseResult {
            variant: String::new(),
            round: 0,
            publishers: self.publishers,
            messages: total,
            publish_phase,
            latency: Percentiles::from_samples(&latencies),
            online_received: online_count.unique,
            duplicates: online_count.duplicates,
            offline_received,
            drain,
        })
    }

    /// Connects subscriber `name` with a persistent session and subscribes it to [`TOPIC`].
    async fn subscribe(&self, name: &str) -> anyhow::Result<Connection> {
        let login = self.subscriber_login(name);
        let (mut connection, _) = Connection::open(self.addr, &login, EXCHANGE_TIMEOUT)
            .await
            .with_context(|| format!("subscriber {} failed to connect", login.client_id))?;
        connection
            .subscribe(TOPIC, QoS::AtLeastOnce, EXCHANGE_TIMEOUT)
            .await
            .with_context(|| format!("subscriber {} failed to subscribe", login.client_id))?;
        Ok(connection)
    }

    /// Connects the publishers, starts them together and waits for every PUBACK. Returns the
    /// time from the start to the last PUBACK and every message's PUBACK latency.
    async fn publish_all(&self) -> anyhow::Result<(Duration, Vec<f64>)> {
        let total = self.options.messages;
        let barrier = Arc::new(Barrier::new(self.publishers + 1));
        let mut tasks = JoinSet::new();
        for publisher in 0..self.publishers {
            let first = publisher * total / self.publishers;
            let end = (publisher + 1) * total / self.publishers;
            let settings = PublisherSettings {
                addr: self.addr,
                indices: first..end,
                payload_bytes: self.options.payload_bytes,
                window: self.options.window,
            };
            let login = self.publisher_login(publisher);
            tasks.spawn(run_publisher(login, settings, Arc::clone(&barrier)));
        }

        barrier.wait().await;
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(total);
        let mut last_ack = started;
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.context("publisher task panicked")??;
            latencies.extend(outcome.latencies_ms);
            last_ack = last_ack.max(outcome.last_ack);
        }
        Ok((last_ack - started, latencies))
    }

    /// Reconnects the offline subscriber, which must find its session, and receives its
    /// queue. Returns the messages received and the time from reconnecting to the last one.
    async fn drain_offline(&self) -> anyhow::Result<(usize, Duration)> {
        let total = self.options.messages;
        let started = Instant::now();
        let login = self.subscriber_login("sub-offline");
        let (connection, _) = Connection::open(self.addr, &login, EXCHANGE_TIMEOUT)
            .await
            .context("offline subscriber failed to reconnect")?;
        if !connection.session_present() {
            bail!("offline subscriber reconnected with Session Present 0; its queue is gone");
        }
        let count = receive_all(connection, total).await?;
        if count.unique != total {
            bail!(
                "offline subscriber received {} of {total} queued messages",
                count.unique
            );
        }
        Ok((count.unique, started.elapsed()))
    }

    fn subscriber_login(&self, name: &str) -> Login {
        Login {
            clean_start: false,
            ..self.login(format!("{GROUP_ID}@@@{name}"), ProtocolVersion::V3_1_1)
        }
    }

    fn publisher_login(&self, publisher: usize) -> Login {
        self.login(format!("{GROUP_ID}@@@pub-{publisher}"), ProtocolVersion::V5)
    }

    fn login(&self, client_id: String, protocol: ProtocolVersion) -> Login {
        signature_login(
            client_id,
            &self.options.access_key_id,
            &self.options.access_key_secret,
            crate::server::INSTANCE_ID,
            protocol,
        )
    }
}

/// Messages a subscriber received, each counted once.
struct ReceivedCount {
    unique: usize,
    /// Messages received again after the first time, such as resends with DUP.
    duplicates: usize,
}

/// Acknowledges every PUBLISH and counts the distinct message indices until all `total`
/// arrived. Fails if the connection closes first or a payload names no valid index.
async fn receive_all(mut connection: Connection, total: usize) -> anyhow::Result<ReceivedCount> {
    let mut seen = vec![false; total];
    let mut count = ReceivedCount {
        unique: 0,
        duplicates: 0,
    };
    while count.unique < total {
        let packet = connection
            .receive()
            .await
            .context("subscriber connection failed")?
            .with_context(|| {
                format!(
                    "server closed the subscriber's connection after {} of {total} messages",
                    count.unique
                )
            })?;
        connection
            .acknowledge(&packet)
            .await
            .context("subscriber failed to send PUBACK")?;
        let Packet::Publish(publish) = packet else {
            continue;
        };
        let index = message_index(&publish.payload)
            .filter(|&index| index < total)
            .with_context(|| format!("unexpected payload on {}", publish.topic.as_str()))?;
        if seen[index] {
            count.duplicates += 1;
        } else {
            seen[index] = true;
            count.unique += 1;
        }
    }
    connection.close().await;
    Ok(count)
}

/// Returns the index a payload starts with.
fn message_index(payload: &[u8]) -> Option<usize> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    usize::try_from(u64::from_be_bytes(bytes)).ok()
}

/// Builds the payload of message `index`: the index, then filler up to `payload_bytes`.
fn message_payload(index: usize, payload_bytes: usize) -> Bytes {
    let mut payload = BytesMut::with_capacity(payload_bytes.max(8));
    payload.put_u64(index as u64);
    payload.resize(payload_bytes.max(8), b'x');
    payload.freeze()
}

struct PublisherSettings {
    addr: std::net::SocketAddr,
    /// The indices of the messages this publisher sends.
    indices: std::ops::Range<usize>,
    payload_bytes: usize,
    window: usize,
}

struct PublisherOutcome {
    /// PUBLISH written to PUBACK read, per message, in milliseconds.
    latencies_ms: Vec<f64>,
    last_ack: Instant,
}

/// Connects, waits at `barrier`, then sends every message of `settings.indices` with at most
/// `settings.window` awaiting PUBACK. Fails on a PUBACK with a failure reason code.
async fn run_publisher(
    login: Login,
    settings: PublisherSettings,
    barrier: Arc<Barrier>,
) -> anyhow::Result<PublisherOutcome> {
    let connected = Connection::open(settings.addr, &login, EXCHANGE_TIMEOUT).await;
    // The coordinator waits for every publisher, so this one passes the barrier even when
    // its connection failed.
    barrier.wait().await;
    let (mut connection, _) =
        connected.with_context(|| format!("publisher {} failed to connect", login.client_id))?;

    // Packet ids run 1..=window, so an id is free again once its PUBACK arrived.
    let mut sent_at: Vec<Option<Instant>> = vec![None; settings.window + 1];
    let mut free_ids: Vec<u16> = (1..=settings.window as u16).rev().collect();
    let mut next = settings.indices.start;
    let mut latencies_ms = Vec::with_capacity(settings.indices.len());
    let mut last_ack = Instant::now();
    while latencies_ms.len() < settings.indices.len() {
        if next < settings.indices.end
            && let Some(packet_id) = free_ids.pop()
        {
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: ByteStr::from(TOPIC),
                packet_id: Some(packet_id),
                properties: Properties::default(),
                payload: message_payload(next, settings.payload_bytes),
            };
            sent_at[usize::from(packet_id)] = Some(Instant::now());
            connection
                .send(&Packet::Publish(publish))
                .await
                .context("publisher failed to send PUBLISH")?;
            next += 1;
            continue;
        }
        let packet = connection
            .receive()
            .await
            .context("publisher connection failed")?
            .context("server closed the publisher's connection")?;
        match packet {
            Packet::PubAck(ack) => {
                let slot = sent_at.get_mut(usize::from(ack.packet_id));
                let Some(sent) = slot.and_then(Option::take) else {
                    bail!(
                        "PUBACK for packet id {} that is not in flight",
                        ack.packet_id
                    );
                };
                if ack.reason.is_error() {
                    bail!("PUBACK carried failure reason code 0x{:02X}", ack.reason.0);
                }
                last_ack = Instant::now();
                latencies_ms.push((last_ack - sent).as_secs_f64() * 1000.0);
                free_ids.push(ack.packet_id);
            }
            Packet::Disconnect(disconnect) => bail!(
                "server sent DISCONNECT with reason code 0x{:02X} to a publisher",
                disconnect.reason.0
            ),
            _ => {}
        }
    }
    connection.close().await;
    Ok(PublisherOutcome {
        latencies_ms,
        last_ack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_index() {
        let payload = message_payload(1234, 100);
        assert_eq!(payload.len(), 100);
        assert_eq!(message_index(&payload), Some(1234));
    }

    #[test]
    fn payload_shorter_than_index_is_widened() {
        assert_eq!(message_payload(7, 2).len(), 8);
    }

    #[test]
    fn short_payload_has_no_index() {
        assert_eq!(message_index(b"abc"), None);
    }
}
