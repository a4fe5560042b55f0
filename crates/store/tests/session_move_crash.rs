//! Kills a process that moves sessions between two instances with SIGKILL at random points,
//! and checks after each kill that every session is stored on exactly one instance with every
//! queued message whose write was acknowledged, under each durability policy.
//!
//! The test binary runs itself as the child: `move_child` does nothing unless
//! `SWITCHYARD_MOVE_CRASH_DIR` is set. Then one task per session repeats two steps: queue a
//! message on the instance that holds the session, then move the session, with its whole
//! queue, to the other instance in one `submit_atomic`. It prints `created <client>`,
//! `ack <client> <seq>` and `moved <client>` as each write completes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use switchyard_store::{
    MessageStore, MessageStoreSettings, SessionOrigin, SessionRecord, SqliteMessageStore,
    StoredMessage, WriteBatch, WriteOp,
};

use common::{POLICIES, Xorshift, durability, print_line, run_child};

const DIR_ENV: &str = "SWITCHYARD_MOVE_CRASH_DIR";
const POLICY_ENV: &str = "SWITCHYARD_MOVE_CRASH_POLICY";
const ROUND_ENV: &str = "SWITCHYARD_MOVE_CRASH_ROUND";
const INSTANCES: [&str; 2] = ["mqtt-move-a", "mqtt-move-b"];
const ROUNDS: u64 = 12;
const SESSIONS: u64 = 6;
/// Each child task stops after this many moves, so a child that is never killed still ends.
const MOVES_PER_TASK: u64 = 30;
/// The parent kills the child after reading between 0 and this many lines.
const MAX_LINES_BEFORE_KILL: u64 = 150;

fn settings(policy: &str) -> MessageStoreSettings {
    MessageStoreSettings {
        durability: durability(policy),
        ..MessageStoreSettings::default()
    }
}

fn client(task: u64) -> String {
    format!("GID_move@@@dev{task}")
}

fn session(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.to_owned(),
        protocol_version: 5,
        session_expiry_interval: u32::MAX,
        expires_at: None,
        subscriptions: Vec::new(),
        origin: SessionOrigin::Region,
    }
}

fn message(client_id: &str, seq: u64) -> StoredMessage {
    StoredMessage {
        topic: "move/crash".to_owned(),
        payload: format!("{client_id} {seq}").into_bytes(),
        qos: 1,
        retain: false,
        properties: Vec::new(),
        expires_at: None,
    }
}

/// Loads where each stored session is and its queue.
async fn load(store: &SqliteMessageStore) -> BTreeMap<String, Vec<(usize, Vec<u64>)>> {
    let mut found: BTreeMap<String, Vec<(usize, Vec<u64>)>> = BTreeMap::new();
    for (index, instance) in INSTANCES.iter().enumerate() {
        let state = store.load_all(instance).await.unwrap();
        assert!(state.corrupt.is_empty(), "{:?}", state.corrupt);
        for stored in state.sessions {
            for (seq, queued) in &stored.queue {
                assert_eq!(
                    *queued,
                    message(&stored.session.client_id, *seq),
                    "queued message {seq} of {} on {instance}",
                    stored.session.client_id
                );
            }
            let seqs = stored.queue.iter().map(|(seq, _)| *seq).collect();
            found
                .entry(stored.session.client_id)
                .or_default()
                .push((index, seqs));
        }
    }
    found
}

/// Moves one session back and forth until its move budget is spent.
async fn move_session(store: Arc<SqliteMessageStore>, task: u64, round: u64, start: Start) {
    let client_id = client(task);
    let (mut here, mut queue) = match start {
        Start::At(here, queue) => (here, queue),
        Start::New => {
            let batch =
                WriteBatch::new(INSTANCES[0]).with(WriteOp::PutSession(session(&client_id)));
            store.submit(batch).await.unwrap();
            print_line(&format!("created {client_id}"));
            (0, Vec::new())
        }
    };
    for n in 0..MOVES_PER_TASK {
        let seq = round * 1_000_000 + n;
        let batch = WriteBatch::new(INSTANCES[here]).with(WriteOp::Enqueue {
            client_id: client_id.clone(),
            seq,
            message: message(&client_id, seq),
        });
        store.submit(batch).await.unwrap();
        queue.push(seq);
        print_line(&format!("ack {client_id} {seq}"));

        let there = 1 - here;
        let removal = WriteBatch::new(INSTANCES[here]).with(WriteOp::RemoveSession {
            client_id: client_id.clone(),
        });
        let mut whole =
            WriteBatch::new(INSTANCES[there]).with(WriteOp::PutSession(session(&client_id)));
        for seq in &queue {
            whole.push(WriteOp::Enqueue {
                client_id: client_id.clone(),
                seq: *seq,
                message: message(&client_id, *seq),
            });
        }
        store.submit_atomic(vec![removal, whole]).await.unwrap();
        here = there;
        print_line(&format!("moved {client_id}"));
    }
}

/// Where a child task finds its session.
enum Start {
    New,
    At(usize, Vec<u64>),
}

/// The child process: moves sessions until it is killed or its tasks finish.
#[test]
fn move_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let policy = std::env::var(POLICY_ENV).expect("policy variable is set");
    let round: u64 = std::env::var(ROUND_ENV)
        .expect("round variable is set")
        .parse()
        .expect("round is a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteMessageStore::open(Path::new(&dir), settings(&policy)).unwrap();
        let mut found = load(&store).await;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for task in 0..SESSIONS {
            let start = match found.remove(&client(task)) {
                Some(mut places) => {
                    assert_eq!(places.len(), 1, "{} is stored once", client(task));
                    let (here, queue) = places.remove(0);
                    Start::At(here, queue)
                }
                None => Start::New,
            };
            tasks.push(tokio::spawn(move_session(
                Arc::clone(&store),
                task,
                round,
                start,
            )));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn moved_sessions_survive_sigkill() {
    if std::env::var(DIR_ENV).is_ok() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut random = Xorshift(0x5eed_4d0e_c2a5_0002);
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut acknowledged: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut moves = 0u64;

    for round in 0..ROUNDS {
        let policy = POLICIES[(round % 3) as usize];
        let kill_after = random.next() % (MAX_LINES_BEFORE_KILL + 1);
        let env = [
            (DIR_ENV, dir.path().display().to_string()),
            (POLICY_ENV, policy.to_owned()),
            (ROUND_ENV, round.to_string()),
        ];
        let mut round_moves = 0u64;
        let end = run_child("move_child", &env, kill_after, |line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["created", client_id] => {
                    created.insert((*client_id).to_owned());
                }
                ["ack", client_id, seq] => {
                    let seq: u64 = seq.parse().unwrap();
                    acknowledged
                        .entry((*client_id).to_owned())
                        .or_default()
                        .insert(seq);
                }
                ["moved", _] => round_moves += 1,
                _ => return false,
            }
            true
        });
        assert!(
            end.killed || end.status.success(),
            "round {round}: the child failed with {}",
            end.status
        );
        moves += round_moves;

        let store = SqliteMessageStore::open(dir.path(), settings(policy)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let found = runtime.block_on(load(&store));
        drop(store);
        // A creation whose line the kill cut off still counts once it is stored.
        created.extend(found.keys().cloned());
        for client_id in &created {
            let places = found.get(client_id).map_or(&[][..], Vec::as_slice);
            let instances: Vec<&str> = places.iter().map(|(index, _)| INSTANCES[*index]).collect();
            assert_eq!(
                instances.len(),
                1,
                "round {round} ({policy}, killed after {kill_after} lines): {client_id} is \
                 stored on {instances:?}"
            );
            let stored: BTreeSet<u64> = places[0].1.iter().copied().collect();
            let expected = acknowledged.get(client_id).cloned().unwrap_or_default();
            let missing: Vec<&u64> = expected.difference(&stored).collect();
            assert!(
                missing.is_empty(),
                "round {round} ({policy}, killed after {kill_after} lines): {client_id} on \
                 {} lacks {} of {} acknowledged messages, first {:?}",
                instances[0],
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(5)]
            );
        }
        println!(
            "round {round}: {policy}, kill after {kill_after} lines, {round_moves} moves \
             acknowledged, {} sessions checked",
            created.len()
        );
    }
    println!(
        "{ROUNDS} rounds, {moves} moves acknowledged, {} messages acknowledged, {:.1} s",
        acknowledged.values().map(BTreeSet::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(created.len() as u64, SESSIONS, "every session was created");
    assert!(
        moves > ROUNDS * 10,
        "only {moves} moves were acknowledged over {ROUNDS} rounds"
    );
}
