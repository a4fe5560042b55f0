//! Kills a writer process with SIGKILL at random points and checks that every write it saw
//! acknowledged is in the store afterwards, under each durability policy.
//!
//! The test binary runs itself as the child: `crash_child` does nothing unless
//! `SWITCHYARD_STORE_CRASH_DIR` is set, and then writes batches from several tasks and prints
//! `ack <seq>` once each submit completes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use switchyard_store::{
    MessageStore, MessageStoreSettings, SessionOrigin, SessionRecord, SqliteMessageStore,
    StoredMessage, WriteBatch, WriteOp,
};

use common::{POLICIES, Xorshift, durability, print_line, run_child};

const DIR_ENV: &str = "SWITCHYARD_STORE_CRASH_DIR";
const POLICY_ENV: &str = "SWITCHYARD_STORE_CRASH_POLICY";
const FIRST_SEQ_ENV: &str = "SWITCHYARD_STORE_CRASH_FIRST_SEQ";
const INSTANCE: &str = "mqtt-crash";
const CLIENT: &str = "GID_crash@@@dev";
const ROUNDS: u64 = 20;
const CHILD_TASKS: u64 = 8;
/// Each child task stops after this many writes, so a child that is never killed still ends.
const WRITES_PER_TASK: u64 = 500;
/// The parent kills the child after reading between 0 and this many acknowledgements.
const MAX_ACKS_BEFORE_KILL: u64 = 300;

fn settings(policy: &str) -> MessageStoreSettings {
    MessageStoreSettings {
        durability: durability(policy),
        max_queued_messages_per_session: u64::MAX,
        ..MessageStoreSettings::default()
    }
}

fn session() -> SessionRecord {
    SessionRecord {
        client_id: CLIENT.to_owned(),
        protocol_version: 4,
        session_expiry_interval: u32::MAX,
        expires_at: None,
        subscriptions: Vec::new(),
        origin: SessionOrigin::Region,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("message {seq}").into_bytes()
}

/// The child process: writes until it is killed or its tasks finish.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let policy = std::env::var(POLICY_ENV).expect("policy variable is set");
    let first_seq: u64 = std::env::var(FIRST_SEQ_ENV)
        .expect("first sequence variable is set")
        .parse()
        .expect("first sequence is a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteMessageStore::open(Path::new(&dir), settings(&policy)).unwrap();
        store
            .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session())))
            .await
            .unwrap();
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for task in 0..CHILD_TASKS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for n in 0..WRITES_PER_TASK {
                    let seq = first_seq + n * CHILD_TASKS + task;
                    let message = StoredMessage {
                        topic: format!("crash/{task}"),
                        payload: payload(seq),
                        qos: 1,
                        retain: false,
                        properties: Vec::new(),
                        expires_at: None,
                    };
                    let batch = WriteBatch::new(INSTANCE).with(WriteOp::Enqueue {
                        client_id: CLIENT.to_owned(),
                        seq,
                        message,
                    });
                    store.submit(batch).await.unwrap();
                    print_line(&format!("ack {seq}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(DIR_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut random = Xorshift(0x5eed_1234_abcd_0001);
    let mut acknowledged: BTreeSet<u64> = BTreeSet::new();

    for round in 0..ROUNDS {
        let policy = POLICIES[(round % 3) as usize];
        let kill_after = random.next() % (MAX_ACKS_BEFORE_KILL + 1);
        let env = [
            (DIR_ENV, dir.path().display().to_string()),
            (POLICY_ENV, policy.to_owned()),
            (FIRST_SEQ_ENV, (round * 1_000_000).to_string()),
        ];
        let mut round_acks = Vec::new();
        run_child("crash_child", &env, kill_after, |line| {
            let Some(seq) = line.strip_prefix("ack ") else {
                return false;
            };
            round_acks.push(seq.parse::<u64>().unwrap());
            true
        });
        acknowledged.extend(round_acks.iter().copied());

        let store = SqliteMessageStore::open(dir.path(), settings(policy)).unwrap();
        assert!(
            store.corrupt_records_at_open().is_empty(),
            "round {round}: {:?}",
            store.corrupt_records_at_open()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let state = runtime.block_on(store.load_all(INSTANCE)).unwrap();
        drop(store);
        if acknowledged.is_empty() {
            continue;
        }
        assert_eq!(state.sessions.len(), 1, "round {round}");
        let stored: BTreeSet<u64> = state.sessions[0]
            .queue
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        let missing: Vec<&u64> = acknowledged.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "round {round} ({policy}, killed after {kill_after} acks): {} of {} acknowledged \
             writes are missing, first {:?}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(5)]
        );
        for (seq, message) in &state.sessions[0].queue {
            assert_eq!(message.payload, payload(*seq), "round {round}");
        }
        println!(
            "round {round}: {policy}, kill after {kill_after} acks, {} acknowledged this round, \
             {} stored in total",
            round_acks.len(),
            stored.len()
        );
    }
    assert!(
        acknowledged.len() > 1000,
        "only {} writes were acknowledged over {ROUNDS} rounds",
        acknowledged.len()
    );
}
