//! Measures the message store on this machine and prints Markdown tables.
//!
//! 1. Engines: fjall and SQLite (through rusqlite) doing what the store does for one QoS 1
//!    message, an insert and, in a later commit, its removal, with one or 64 messages per
//!    commit, with and without fsync.
//! 2. Durability policies: `SqliteMessageStore` with 1, 16 and 256 concurrent writers, each
//!    enqueueing a message and then dequeueing it as a PUBACK would, one submit each.
//! 3. Open time of a store with `--sessions` sessions and `--messages` queued messages.
//!
//! Run: `cargo run --release -p switchyard-store --example store_bench -- --help`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard_store::{
    Durability, MessageStore, MessageStoreSettings, SessionOrigin, SessionRecord,
    SqliteMessageStore, StoredMessage, WriteBatch, WriteOp,
};

#[derive(Parser, Debug)]
#[command(about = "Benchmark of the Switchyard message store")]
struct Args {
    /// Duration of each throughput case, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Numbers of concurrent writers for the policy cases, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Sessions in the store whose open time is measured.
    #[arg(long, default_value_t = 100_000)]
    sessions: u64,
    /// Queued messages, spread evenly over the sessions, in the store whose open time is
    /// measured.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload size of every message, in bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Directory for the stores (default: a new directory in the system temporary directory,
    /// removed at the end). It must be on the disk under test, not a RAM file system.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skips the engine comparison.
    #[arg(long)]
    skip_engines: bool,
    /// Skips the open-time measurement.
    #[arg(long)]
    skip_open: bool,
}

const INSTANCE: &str = "mqtt-bench";

fn main() {
    let args = Args::parse();
    let temporary = tempfile::tempdir().expect("create temporary directory");
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&root).expect("create benchmark directory");
    let duration = Duration::from_secs_f64(args.seconds);

    if !args.skip_engines {
        engines(&root.join("engines"), duration, args.payload);
    }
    policies(&root.join("policies"), duration, &args);
    if !args.skip_open {
        open_time(&root.join("open"), &args);
    }
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn print_rate(label: &str, count: u64, elapsed: Duration) -> f64 {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "| {label} | {count} | {:.2} | {rate:.0} |",
        elapsed.as_secs_f64()
    );
    rate
}

/// Runs `step` (which handles `per_commit` messages) until `duration` has passed and returns
/// the number of messages and the elapsed time.
fn run_for(duration: Duration, per_commit: u64, mut step: impl FnMut(u64)) -> (u64, Duration) {
    let start = Instant::now();
    let mut messages = 0;
    let mut round = 0;
    while start.elapsed() < duration {
        step(round);
        round += 1;
        messages += per_commit;
    }
    (messages, start.elapsed())
}

fn engines(dir: &Path, duration: Duration, payload_size: usize) {
    println!("\n### Engines: insert a message, remove it in the next commit\n");
    println!("| case | messages | seconds | messages/s |");
    println!("|---|---|---|---|");
    let value = payload(payload_size + 40);
    for (label, per_commit, durable) in [
        ("1 message per commit, fsync", 1u64, true),
        ("64 messages per commit, fsync", 64, true),
        ("1 message per commit, no fsync", 1, false),
    ] {
        let fjall_dir = dir.join(format!("fjall-{per_commit}-{durable}"));
        let database = fjall::Database::builder(&fjall_dir)
            .open()
            .expect("open fjall");
        let keyspace = database
            .keyspace("queues", fjall::KeyspaceCreateOptions::default)
            .expect("open fjall keyspace");
        let mode = durable.then_some(fjall::PersistMode::SyncData);
        let key = |seq: u64| format!("{INSTANCE}/1/GID_bench@@@device-0001/{seq:020}");
        let (count, elapsed) = run_for(duration, per_commit, |round| {
            let mut batch = database.batch().durability(mode);
            for i in 0..per_commit {
                let seq = round * per_commit + i;
                batch.insert(&keyspace, key(seq), value.clone());
                if seq >= per_commit {
                    batch.remove(&keyspace, key(seq - per_commit));
                }
            }
            batch.commit().expect("fjall commit");
        });
        print_rate(&format!("fjall 3.1, {label}"), count, elapsed);
        drop(keyspace);
        drop(database);

        let sqlite_dir = dir.join(format!("sqlite-{per_commit}-{durable}"));
        std::fs::create_dir_all(&sqlite_dir).expect("create SQLite directory");
        let mut connection =
            rusqlite::Connection::open(sqlite_dir.join("bench.db")).expect("open SQLite");
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {};
                 CREATE TABLE records (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;",
                if durable { "FULL" } else { "NORMAL" }
            ))
            .expect("configure SQLite");
        let (count, elapsed) = run_for(duration, per_commit, |round| {
            let transaction = connection.transaction().expect("begin");
            {
                let mut insert = transaction
                    .prepare_cached("INSERT INTO records (key, value) VALUES (?1, ?2)")
                    .expect("prepare insert");
                let mut delete = transaction
                    .prepare_cached("DELETE FROM records WHERE key = ?1")
                    .expect("prepare delete");
                for i in 0..per_commit {
                    let seq = round * per_commit + i;
                    insert
                        .execute(rusqlite::params![key(seq), value])
                        .expect("insert");
                    if seq >= per_commit {
                        delete.execute([key(seq - per_commit)]).expect("delete");
                    }
                }
            }
            transaction.commit().expect("commit");
        });
        print_rate(
            &format!("SQLite 3 (rusqlite 0.43), {label}"),
            count,
            elapsed,
        );
    }
}

fn session(client_id: String) -> SessionRecord {
    SessionRecord {
        client_id,
        protocol_version: 5,
        session_expiry_interval: 3600,
        expires_at: None,
        subscriptions: Vec::new(),
        origin: SessionOrigin::Region,
    }
}

fn message(payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: "devices/bench/telemetry".to_owned(),
        payload: payload.to_vec(),
        qos: 1,
        retain: false,
        properties: Vec::new(),
        expires_at: None,
    }
}

fn policies(dir: &Path, duration: Duration, args: &Args) {
    println!("\n### Durability policies: enqueue one QoS 1 message, then dequeue it\n");
    println!(
        "| policy | writers | messages | seconds | messages/s | commits | batches per commit |"
    );
    println!("|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build runtime");
    let cases = [
        ("PerMessage", Durability::PerMessage),
        ("GroupCommit (default: 1 ms, 256)", Durability::default()),
        (
            "GroupCommit (0 ms, 256)",
            Durability::GroupCommit {
                max_delay: Duration::ZERO,
                max_batch: 256,
            },
        ),
        ("Memory", Durability::Memory),
    ];
    for (index, (label, durability)) in cases.into_iter().enumerate() {
        for &writers in &args.writers {
            let store_dir = dir.join(format!("{index}-{writers}"));
            let settings = MessageStoreSettings {
                durability,
                ..MessageStoreSettings::default()
            };
            let store =
                Arc::new(SqliteMessageStore::open(&store_dir, settings).expect("open store"));
            let payload = payload(args.payload);
            let (messages, elapsed) = runtime.block_on(async {
                let mut setup = WriteBatch::new(INSTANCE);
                for writer in 0..writers {
                    setup.push(WriteOp::PutSession(session(format!("client-{writer}"))));
                }
                store.submit(setup).await.expect("write sessions");

                let start = Instant::now();
                let mut tasks = Vec::new();
                for writer in 0..writers {
                    let store = Arc::clone(&store);
                    let payload = payload.clone();
                    tasks.push(tokio::spawn(async move {
                        let client_id = format!("client-{writer}");
                        let mut seq = 0u64;
                        while start.elapsed() < duration {
                            let enqueue = WriteBatch::new(INSTANCE).with(WriteOp::Enqueue {
                                client_id: client_id.clone(),
                                seq,
                                message: message(&payload),
                            });
                            store.submit(enqueue).await.expect("enqueue");
                            let dequeue = WriteBatch::new(INSTANCE).with(WriteOp::Dequeue {
                                client_id: client_id.clone(),
                                seq,
                            });
                            store.submit(dequeue).await.expect("dequeue");
                            seq += 1;
                        }
                        seq
                    }));
                }
                let mut messages = 0;
                for task in tasks {
                    messages += task.await.expect("writer task");
                }
                (messages, start.elapsed())
            });
            let stats = store.stats();
            let rate = messages as f64 / elapsed.as_secs_f64();
            println!(
                "| {label} | {writers} | {messages} | {:.2} | {rate:.0} | {} | {:.1} |",
                elapsed.as_secs_f64(),
                stats.commits,
                stats.batches as f64 / stats.commits.max(1) as f64
            );
            drop(store);
            let _ = std::fs::remove_dir_all(&store_dir);
        }
    }
}

fn open_time(dir: &Path, args: &Args) {
    println!(
        "\n### Open time: {} sessions, {} queued messages of {} bytes\n",
        args.sessions, args.messages, args.payload
    );
    let settings = MessageStoreSettings {
        durability: Durability::Memory,
        max_queued_messages_per_session: u64::MAX,
        max_instance_bytes: u64::MAX,
        ..MessageStoreSettings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build runtime");
    let sessions = args.sessions.max(1);
    let per_session = args.messages / sessions;
    let extra = args.messages % sessions;
    let payload = payload(args.payload);

    let fill_start = Instant::now();
    {
        let store = SqliteMessageStore::open(dir, settings.clone()).expect("open store");
        runtime.block_on(async {
            let mut batch = WriteBatch::new(INSTANCE);
            for client in 0..sessions {
                let client_id = format!("GID_bench@@@device-{client:06}");
                batch.push(WriteOp::PutSession(session(client_id.clone())));
                let count = per_session + u64::from(client < extra);
                for seq in 0..count {
                    batch.push(WriteOp::Enqueue {
                        client_id: client_id.clone(),
                        seq,
                        message: message(&payload),
                    });
                }
                if batch.ops.len() >= 20_000 {
                    let full = std::mem::replace(&mut batch, WriteBatch::new(INSTANCE));
                    store.submit(full).await.expect("fill store");
                }
            }
            store.submit(batch).await.expect("fill store");
        });
    }
    let fill = fill_start.elapsed();
    let file = dir
        .join(switchyard_store::message::MESSAGE_STORE_DIR)
        .join(switchyard_store::message::MESSAGE_DATABASE_FILE_NAME);
    let size = std::fs::metadata(&file).map_or(0, |metadata| metadata.len());

    let open_start = Instant::now();
    let store = SqliteMessageStore::open(dir, settings).expect("reopen store");
    let open = open_start.elapsed();
    let load_start = Instant::now();
    let state = runtime
        .block_on(store.load_all(INSTANCE))
        .expect("load instance");
    let load = load_start.elapsed();
    let loaded_messages: usize = state
        .sessions
        .iter()
        .map(|session| session.queue.len())
        .sum();
    assert_eq!(state.sessions.len() as u64, sessions);
    assert_eq!(loaded_messages as u64, args.messages);

    println!("| step | seconds |");
    println!("|---|---|");
    println!(
        "| fill (Memory policy, 20,000 operations per batch) | {:.2} |",
        fill.as_secs_f64()
    );
    println!(
        "| open: scan and verify every record, count queues | {:.2} |",
        open.as_secs_f64()
    );
    println!(
        "| `load_all`: decode every session and message | {:.2} |",
        load.as_secs_f64()
    );
    println!("\ndatabase file: {} MiB", size >> 20);
}
