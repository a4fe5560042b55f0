//! Round trips, reopening, limits, expiry, compaction and corruption handling of
//! `SqliteMessageStore`.

use std::path::Path;
use std::time::Duration;

use switchyard_store::message::{MESSAGE_DATABASE_FILE_NAME, MESSAGE_STORE_DIR};
use switchyard_store::{
    Durability, InflightMessage, MessageStore, MessageStoreSettings, QueueFullPolicy,
    SessionOrigin, SessionRecord, SqliteMessageStore, StoreError, StoredMessage,
    StoredSubscription, StoredWill, WriteBatch, WriteOp,
};

const INSTANCE: &str = "mqtt-cn-hz01";

fn message(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.to_owned(),
        payload: payload.to_vec(),
        qos: 1,
        retain: false,
        properties: vec![0x01, 0x01],
        expires_at: None,
    }
}

fn session(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.to_owned(),
        protocol_version: 5,
        session_expiry_interval: 3600,
        expires_at: None,
        subscriptions: vec![
            StoredSubscription {
                filter: "devices/+/telemetry".to_owned(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                subscription_identifier: Some(7),
            },
            StoredSubscription {
                filter: "$share/group/alerts/#".to_owned(),
                qos: 2,
                no_local: false,
                retain_as_published: true,
                retain_handling: 0,
                subscription_identifier: None,
            },
        ],
        origin: SessionOrigin::Global {
            group: "global".to_owned(),
        },
    }
}

fn open(dir: &Path, settings: MessageStoreSettings) -> SqliteMessageStore {
    SqliteMessageStore::open(dir, settings).expect("open message store")
}

fn enqueue(client_id: &str, seq: u64, payload: &[u8]) -> WriteOp {
    WriteOp::Enqueue {
        client_id: client_id.to_owned(),
        seq,
        message: message("devices/1/telemetry", payload),
    }
}

/// Writes one session with every kind of state and one retained message.
async fn write_full_session(store: &SqliteMessageStore) {
    let batch = WriteBatch::new(INSTANCE)
        .with(WriteOp::PutSession(session("GID_a@@@dev1")))
        .with(enqueue("GID_a@@@dev1", 1, b"first"))
        .with(enqueue("GID_a@@@dev1", 2, &[0, 255, 10, 13]))
        .with(WriteOp::PutInflight {
            client_id: "GID_a@@@dev1".to_owned(),
            packet_id: 42,
            inflight: InflightMessage {
                message: message("devices/1/cmd", b"inflight"),
                pubrel_sent: false,
            },
        })
        .with(WriteOp::PutInflight {
            client_id: "GID_a@@@dev1".to_owned(),
            packet_id: 7,
            inflight: InflightMessage {
                message: StoredMessage {
                    qos: 2,
                    ..message("devices/1/cmd", b"qos2")
                },
                pubrel_sent: true,
            },
        })
        .with(WriteOp::AddIncomingQos2 {
            client_id: "GID_a@@@dev1".to_owned(),
            packet_id: 65535,
        })
        .with(WriteOp::PutWill {
            client_id: "GID_a@@@dev1".to_owned(),
            will: StoredWill {
                message: message("devices/1/status", b"offline"),
                delay_interval: 30,
                publish_at: Some(1_900_000_000_000),
            },
        })
        .with(WriteOp::PutRetained(StoredMessage {
            retain: true,
            ..message("devices/1/status", b"online")
        }));
    store.submit(batch).await.expect("submit full session");
}

fn assert_full_session(state: &switchyard_store::InstanceState) {
    assert_eq!(state.sessions.len(), 1);
    let loaded = &state.sessions[0];
    assert_eq!(loaded.session, session("GID_a@@@dev1"));
    assert_eq!(
        loaded.queue,
        vec![
            (1, message("devices/1/telemetry", b"first")),
            (2, message("devices/1/telemetry", &[0, 255, 10, 13])),
        ]
    );
    let packet_ids: Vec<u16> = loaded.inflight.iter().map(|(id, _)| *id).collect();
    assert_eq!(packet_ids, vec![7, 42]);
    assert!(loaded.inflight[0].1.pubrel_sent);
    assert_eq!(loaded.inflight[0].1.message.qos, 2);
    assert_eq!(loaded.inflight[1].1.message.payload, b"inflight");
    assert_eq!(loaded.incoming_qos2, vec![65535]);
    let will = loaded.will.as_ref().expect("will is stored");
    assert_eq!(will.delay_interval, 30);
    assert_eq!(will.publish_at, Some(1_900_000_000_000));
    assert_eq!(will.message.payload, b"offline");
    assert_eq!(state.retained.len(), 1);
    assert_eq!(state.retained[0].payload, b"online");
    assert!(state.retained[0].retain);
    assert!(state.corrupt.is_empty(), "{:?}", state.corrupt);
}

#[tokio::test]
async fn every_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    write_full_session(&store).await;
    let state = store.load_all(INSTANCE).await.unwrap();
    assert_full_session(&state);
}

#[tokio::test]
async fn reopen_keeps_everything() {
    for durability in [
        Durability::PerMessage,
        Durability::default(),
        Durability::Memory,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let settings = MessageStoreSettings {
            durability,
            ..MessageStoreSettings::default()
        };
        let store = open(dir.path(), settings.clone());
        write_full_session(&store).await;
        drop(store);

        let store = open(dir.path(), settings);
        assert!(store.corrupt_records_at_open().is_empty());
        let state = store.load_all(INSTANCE).await.unwrap();
        assert_full_session(&state);
    }
}

#[tokio::test]
async fn removals_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    write_full_session(&store).await;
    let client = "GID_a@@@dev1".to_owned();
    let batch = WriteBatch::new(INSTANCE)
        .with(WriteOp::Dequeue {
            client_id: client.clone(),
            seq: 1,
        })
        .with(WriteOp::RemoveInflight {
            client_id: client.clone(),
            packet_id: 42,
        })
        .with(WriteOp::RemoveIncomingQos2 {
            client_id: client.clone(),
            packet_id: 65535,
        })
        .with(WriteOp::RemoveWill {
            client_id: client.clone(),
        })
        .with(WriteOp::RemoveRetained {
            topic: "devices/1/status".to_owned(),
        })
        .with(WriteOp::Dequeue {
            client_id: client.clone(),
            seq: 999,
        });
    store.submit(batch).await.unwrap();

    let state = store.load_all(INSTANCE).await.unwrap();
    let loaded = &state.sessions[0];
    assert_eq!(loaded.queue.len(), 1);
    assert_eq!(loaded.queue[0].0, 2);
    assert_eq!(loaded.inflight.len(), 1);
    assert_eq!(loaded.inflight[0].0, 7);
    assert!(loaded.incoming_qos2.is_empty());
    assert!(loaded.will.is_none());
    assert!(state.retained.is_empty());

    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::RemoveSession { client_id: client }))
        .await
        .unwrap();
    let state = store.load_all(INSTANCE).await.unwrap();
    assert!(state.sessions.is_empty());
    assert!(state.corrupt.is_empty());
}

#[tokio::test]
async fn instances_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    for instance in ["mqtt-a", "mqtt-b"] {
        let batch = WriteBatch::new(instance)
            .with(WriteOp::PutSession(session("same-client")))
            .with(enqueue("same-client", 1, instance.as_bytes()));
        store.submit(batch).await.unwrap();
    }
    for instance in ["mqtt-a", "mqtt-b"] {
        let state = store.load_all(instance).await.unwrap();
        assert_eq!(state.sessions.len(), 1);
        assert_eq!(state.sessions[0].queue[0].1.payload, instance.as_bytes());
    }
    let state = store.load_all("mqtt-c").await.unwrap();
    assert!(state.sessions.is_empty());
}

#[tokio::test]
async fn failed_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    // The second operation refers to a session that does not exist, so the first one must be
    // rolled back with it.
    let batch = WriteBatch::new(INSTANCE)
        .with(WriteOp::PutSession(session("dev1")))
        .with(enqueue("dev-missing", 1, b"x"));
    let error = store.submit(batch).await.unwrap_err();
    assert!(
        matches!(error, StoreError::SessionNotFound { ref client_id, .. } if client_id == "dev-missing"),
        "{error}"
    );
    let state = store.load_all(INSTANCE).await.unwrap();
    assert!(state.sessions.is_empty());

    // The session written by the failed batch does not count as present afterwards either.
    let error = store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 1, b"x")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SessionNotFound { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    let cases = [
        WriteOp::PutSession(SessionRecord {
            protocol_version: 6,
            ..session("dev1")
        }),
        WriteOp::AddIncomingQos2 {
            client_id: "dev1".to_owned(),
            packet_id: 0,
        },
        WriteOp::Enqueue {
            client_id: "dev1".to_owned(),
            seq: 1,
            message: StoredMessage {
                qos: 3,
                ..message("t", b"")
            },
        },
        WriteOp::Enqueue {
            client_id: "dev1".to_owned(),
            seq: u64::MAX,
            message: message("t", b""),
        },
        WriteOp::PutSession(session("")),
    ];
    for op in cases {
        let error = store
            .submit(WriteBatch::new(INSTANCE).with(op.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidWrite { .. }),
            "{op:?} gave {error}"
        );
    }
}

#[tokio::test]
async fn queue_limit_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_queued_messages_per_session: 3,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings.clone());
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    for seq in 1..=3 {
        store
            .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", seq, b"m")))
            .await
            .unwrap();
    }
    let error = store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 4, b"m")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::QueueFull { limit: 3, .. }),
        "{error}"
    );
    assert!(error.is_quota_exceeded());

    // Replacing a queued message does not grow the queue.
    store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 2, b"replaced")))
        .await
        .unwrap();
    // Room made by a dequeue is usable at once, and the count survives a reopen.
    store
        .submit(
            WriteBatch::new(INSTANCE)
                .with(WriteOp::Dequeue {
                    client_id: "dev1".to_owned(),
                    seq: 1,
                })
                .with(enqueue("dev1", 4, b"m")),
        )
        .await
        .unwrap();
    drop(store);
    let store = open(dir.path(), settings);
    let error = store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 5, b"m")))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::QueueFull { .. }), "{error}");
    let state = store.load_all(INSTANCE).await.unwrap();
    let seqs: Vec<u64> = state.sessions[0]
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(state.sessions[0].queue[0].1.payload, b"replaced");
}

#[tokio::test]
async fn queue_limit_drops_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_queued_messages_per_session: 2,
        queue_full: QueueFullPolicy::DropOldest,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings);
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    for seq in 1..=5 {
        store
            .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", seq, b"m")))
            .await
            .unwrap();
    }
    let state = store.load_all(INSTANCE).await.unwrap();
    let seqs: Vec<u64> = state.sessions[0]
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    assert_eq!(store.stats().dropped_oldest, 3);
}

#[tokio::test]
async fn instance_storage_limit_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_instance_bytes: 4096,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings.clone());
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    let mut accepted = 0;
    let mut rejection = None;
    for seq in 1..=100 {
        match store
            .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", seq, &[7; 200])))
            .await
        {
            Ok(()) => accepted += 1,
            Err(error) => {
                rejection = Some(error);
                break;
            }
        }
    }
    let error = rejection.expect("the limit was reached");
    assert!(
        matches!(error, StoreError::InstanceStorageFull { limit: 4096, .. }),
        "{error}"
    );
    assert!(error.is_quota_exceeded());
    assert!(accepted > 5, "accepted {accepted}");
    assert!(accepted < 20, "accepted {accepted}");

    // Another instance has its own budget, and removals are always allowed.
    store
        .submit(WriteBatch::new("other").with(WriteOp::PutRetained(message("t", &[1; 200]))))
        .await
        .unwrap();
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::Dequeue {
            client_id: "dev1".to_owned(),
            seq: 1,
        }))
        .await
        .unwrap();
    store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 1000, &[7; 200])))
        .await
        .unwrap();

    // The usage is counted again on open.
    drop(store);
    let store = open(dir.path(), settings);
    let error = store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", 1001, &[7; 200])))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InstanceStorageFull { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn expired_state_is_skipped_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    let now = 1_800_000_000_000;
    let expiring = |seq, deadline| WriteOp::Enqueue {
        client_id: "live".to_owned(),
        seq,
        message: StoredMessage {
            expires_at: Some(deadline),
            ..message("t", b"m")
        },
    };
    let batch = WriteBatch::new(INSTANCE)
        .with(WriteOp::PutSession(SessionRecord {
            expires_at: Some(now - 1),
            ..session("expired")
        }))
        .with(enqueue("expired", 1, b"m"))
        .with(WriteOp::PutSession(SessionRecord {
            expires_at: Some(now + 60_000),
            ..session("live")
        }))
        .with(expiring(1, now))
        .with(expiring(2, now + 1))
        .with(enqueue("live", 3, b"m"))
        .with(WriteOp::PutRetained(StoredMessage {
            expires_at: Some(now - 5),
            ..message("retained/old", b"r")
        }))
        .with(WriteOp::PutRetained(message("retained/new", b"r")));
    store.submit(batch).await.unwrap();

    let state = store.load_all_at(INSTANCE, now).await.unwrap();
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.sessions[0].session.client_id, "live");
    let seqs: Vec<u64> = state.sessions[0]
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(state.retained.len(), 1);
    assert_eq!(state.retained[0].topic, "retained/new");
    assert_eq!(state.expired_skipped, 3);
    assert!(state.corrupt.is_empty(), "{:?}", state.corrupt);

    let report = store.purge_expired(now).await.unwrap();
    assert_eq!(report.sessions, 1);
    assert_eq!(report.queued_messages, 1);
    assert_eq!(report.retained_messages, 1);
    let again = store.purge_expired(now).await.unwrap();
    assert_eq!(again, Default::default());

    // What load skipped is now gone from disk, so an earlier clock still does not see it.
    let state = store.load_all_at(INSTANCE, 0).await.unwrap();
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.sessions[0].queue.len(), 2);
    assert_eq!(state.retained.len(), 1);
    assert_eq!(state.expired_skipped, 0);
}

fn database_size(dir: &Path) -> u64 {
    let store_dir = dir.join(MESSAGE_STORE_DIR);
    let main = std::fs::metadata(store_dir.join(MESSAGE_DATABASE_FILE_NAME)).map_or(0, |m| m.len());
    let wal = std::fs::metadata(store_dir.join(format!("{MESSAGE_DATABASE_FILE_NAME}-wal")))
        .map_or(0, |m| m.len());
    main + wal
}

#[tokio::test]
async fn compaction_shrinks_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        // Only the explicit compaction below runs.
        compact_after_removed_bytes: u64::MAX,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings);
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    let payload = vec![9u8; 4000];
    for chunk in 0..20u64 {
        let mut batch = WriteBatch::new(INSTANCE);
        for seq in chunk * 100..(chunk + 1) * 100 {
            batch.push(enqueue("dev1", seq, &payload));
        }
        store.submit(batch).await.unwrap();
    }
    store.compact().await.unwrap();
    let full = database_size(dir.path());
    assert!(full > 8_000_000, "database is {full} bytes");

    let mut batch = WriteBatch::new(INSTANCE);
    for seq in 0..2000 {
        batch.push(WriteOp::Dequeue {
            client_id: "dev1".to_owned(),
            seq,
        });
    }
    store.submit(batch).await.unwrap();
    store.compact().await.unwrap();
    let compacted = database_size(dir.path());
    assert!(
        compacted < full / 10,
        "database is {compacted} bytes after compaction, {full} before"
    );
    assert_eq!(store.stats().compactions, 2);
}

#[tokio::test]
async fn removed_bytes_trigger_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        compact_after_removed_bytes: 100_000,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings);
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    let mut batch = WriteBatch::new(INSTANCE);
    for seq in 0..100 {
        batch.push(enqueue("dev1", seq, &[1; 2000]));
    }
    store.submit(batch).await.unwrap();
    assert_eq!(store.stats().compactions, 0);
    let mut batch = WriteBatch::new(INSTANCE);
    for seq in 0..100 {
        batch.push(WriteOp::Dequeue {
            client_id: "dev1".to_owned(),
            seq,
        });
    }
    store.submit(batch).await.unwrap();
    // The writer compacts after completing the submit, and runs commands in order, so the
    // compaction has run once this load returns.
    store.load_all(INSTANCE).await.unwrap();
    assert_eq!(store.stats().compactions, 1);
}

#[tokio::test]
async fn second_open_fails_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path(), MessageStoreSettings::default());
    let error = SqliteMessageStore::open(dir.path(), MessageStoreSettings::default()).unwrap_err();
    assert!(error.is_busy(), "{error}");
}

/// Flips one byte inside the first occurrence of `needle` in `file`.
fn corrupt_bytes(file: &Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let offset = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{:?} not found in {}", needle, file.display()));
    bytes[offset + needle.len() / 2] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
    offset
}

#[tokio::test]
async fn corrupt_record_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    let mut batch = WriteBatch::new(INSTANCE);
    for client in 0..20 {
        let client_id = format!("dev{client:02}");
        batch.push(WriteOp::PutSession(session(&client_id)));
        for seq in 0..10 {
            let payload = format!("payload-{client_id}-{seq:03}-end");
            batch.push(enqueue(&client_id, seq, payload.as_bytes()));
        }
    }
    batch.push(WriteOp::PutRetained(message(
        "retained/a",
        b"retained-payload-a",
    )));
    store.submit(batch).await.unwrap();
    // Dropping checkpoints the WAL, so the records are in the main file.
    drop(store);

    let file = dir
        .path()
        .join(MESSAGE_STORE_DIR)
        .join(MESSAGE_DATABASE_FILE_NAME);
    corrupt_bytes(&file, b"payload-dev07-004-end");
    corrupt_bytes(&file, b"retained-payload-a");

    let store = open(dir.path(), MessageStoreSettings::default());
    let at_open: Vec<&str> = store
        .corrupt_records_at_open()
        .iter()
        .map(|record| record.key.as_str())
        .collect();
    assert_eq!(
        at_open,
        vec![
            "mqtt-cn-hz01/queued/dev07/4",
            "mqtt-cn-hz01/retained/retained/a/0"
        ]
    );
    let record = &store.corrupt_records_at_open()[0];
    assert_eq!(record.file, file);
    assert!(
        record.reason.contains("checksum mismatch"),
        "{}",
        record.reason
    );

    let state = store.load_all(INSTANCE).await.unwrap();
    assert_eq!(state.corrupt.len(), 2);
    assert_eq!(state.sessions.len(), 20);
    assert!(state.retained.is_empty());
    for loaded in &state.sessions {
        let expected = if loaded.session.client_id == "dev07" {
            9
        } else {
            10
        };
        assert_eq!(loaded.queue.len(), expected, "{}", loaded.session.client_id);
    }
    let dev07 = &state.sessions[7];
    assert!(dev07.queue.iter().all(|(seq, _)| *seq != 4));

    // The store stays writable, and rewriting the damaged record repairs it.
    store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("dev07", 4, b"rewritten")))
        .await
        .unwrap();
    let state = store.load_all(INSTANCE).await.unwrap();
    assert_eq!(state.corrupt.len(), 1);
    assert_eq!(state.sessions[7].queue.len(), 10);
}

/// A session record and one queued message of `GID_t@@@dev` in instance `mqtt-1`, as the
/// first record format wrote them. The session (protocol 5, expiry 3600 s, one subscription
/// `sensors/#`) has no origin. The message `sensors/1` is queued under sequence number 9.
const FORMAT_1_RECORDS: [(i64, i64, &[u8]); 2] = [
    (
        0,
        0,
        &[
            0x01, 0xb5, 0xda, 0x22, 0x22, 0x05, 0x10, 0x0e, 0x00, 0x00, 0x01, 0x00, 0x68, 0xe5,
            0xcf, 0x8b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x73,
            0x65, 0x6e, 0x73, 0x6f, 0x72, 0x73, 0x2f, 0x23, 0x01, 0x00, 0x01, 0x02, 0x01, 0x07,
            0x00, 0x00, 0x00,
        ],
    ),
    (
        1,
        9,
        &[
            0x01, 0xde, 0x54, 0x0f, 0xa3, 0x09, 0x00, 0x00, 0x00, 0x73, 0x65, 0x6e, 0x73, 0x6f,
            0x72, 0x73, 0x2f, 0x31, 0x02, 0x00, 0x00, 0x00, 0x68, 0x69, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00,
        ],
    ),
];

#[tokio::test]
async fn format_1_records_load_and_update() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), MessageStoreSettings::default()));
    let file = dir
        .path()
        .join(MESSAGE_STORE_DIR)
        .join(MESSAGE_DATABASE_FILE_NAME);
    let connection = rusqlite::Connection::open(&file).unwrap();
    for (kind, seq, value) in FORMAT_1_RECORDS {
        connection
            .execute(
                "INSERT INTO records (instance, kind, name, seq, expires_at, value) \
                 VALUES ('mqtt-1', ?1, 'GID_t@@@dev', ?2, NULL, ?3)",
                rusqlite::params![kind, seq, value],
            )
            .unwrap();
    }
    drop(connection);

    let store = open(dir.path(), MessageStoreSettings::default());
    assert!(store.corrupt_records_at_open().is_empty());
    // The stored deadline is in 2023, so load as of an earlier time.
    let state = store
        .load_all_at("mqtt-1", 1_600_000_000_000)
        .await
        .unwrap();
    assert!(state.corrupt.is_empty(), "{:?}", state.corrupt);
    assert_eq!(state.sessions.len(), 1);
    let session = &state.sessions[0];
    assert_eq!(session.session.origin, SessionOrigin::Region);
    assert_eq!(session.session.session_expiry_interval, 3600);
    assert_eq!(session.session.subscriptions[0].filter, "sensors/#");
    assert_eq!(session.queue.len(), 1);
    assert_eq!(session.queue[0].0, 9);
    assert_eq!(session.queue[0].1.payload, b"hi");

    // The session record is rewritten in the current format next to the old message.
    let global = SessionOrigin::Global {
        group: "global".to_owned(),
    };
    let record = SessionRecord {
        origin: global.clone(),
        expires_at: None,
        ..session.session.clone()
    };
    let batch = WriteBatch::new("mqtt-1")
        .with(WriteOp::PutSession(record))
        .with(enqueue("GID_t@@@dev", 10, b"new"));
    store.submit(batch).await.unwrap();
    drop(store);

    let store = open(dir.path(), MessageStoreSettings::default());
    let state = store.load_all("mqtt-1").await.unwrap();
    assert!(state.corrupt.is_empty(), "{:?}", state.corrupt);
    assert_eq!(state.sessions[0].session.origin, global);
    let payloads: Vec<&[u8]> = state.sessions[0]
        .queue
        .iter()
        .map(|(_, message)| message.payload.as_slice())
        .collect();
    assert_eq!(payloads, vec![&b"hi"[..], &b"new"[..]]);
}

#[tokio::test]
async fn torn_value_and_orphans_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    let batch = WriteBatch::new(INSTANCE)
        .with(WriteOp::PutSession(session("dev1")))
        .with(enqueue("dev1", 1, b"kept"))
        .with(WriteOp::PutSession(session("dev2")))
        .with(enqueue("dev2", 1, b"orphaned"));
    store.submit(batch).await.unwrap();
    drop(store);

    // Cuts the last bytes off one session value, as a torn write would.
    let file = dir
        .path()
        .join(MESSAGE_STORE_DIR)
        .join(MESSAGE_DATABASE_FILE_NAME);
    let connection = rusqlite::Connection::open(&file).unwrap();
    let changed = connection
        .execute(
            "UPDATE records SET value = substr(value, 1, length(value) - 3) \
             WHERE kind = 0 AND name = 'dev2'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(connection);

    let store = open(dir.path(), MessageStoreSettings::default());
    assert_eq!(store.corrupt_records_at_open().len(), 1);
    let state = store.load_all(INSTANCE).await.unwrap();
    let keys: Vec<&str> = state
        .corrupt
        .iter()
        .map(|record| record.key.as_str())
        .collect();
    assert_eq!(
        keys,
        vec!["mqtt-cn-hz01/session/dev2/0", "mqtt-cn-hz01/queued/dev2/1"]
    );
    assert!(state.corrupt[1].reason.contains("session record"));
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.sessions[0].queue[0].1.payload, b"kept");
}

#[tokio::test]
async fn concurrent_group_commit_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        durability: Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
            max_batch: 64,
        },
        ..MessageStoreSettings::default()
    };
    let store = std::sync::Arc::new(open(dir.path(), settings));
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..32u64 {
        let store = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for n in 0..20u64 {
                let seq = writer * 1000 + n;
                store
                    .submit(WriteBatch::new(INSTANCE).with(enqueue("dev1", seq, b"m")))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.batches, 1 + 32 * 20);
    assert!(stats.commits < stats.batches, "{stats:?}");
    let state = store.load_all(INSTANCE).await.unwrap();
    assert_eq!(state.sessions[0].queue.len(), 32 * 20);
}

#[tokio::test]
async fn schema_from_newer_version_fails() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), MessageStoreSettings::default()));
    let file = dir
        .path()
        .join(MESSAGE_STORE_DIR)
        .join(MESSAGE_DATABASE_FILE_NAME);
    let connection = rusqlite::Connection::open(&file).unwrap();
    connection.pragma_update(None, "user_version", 9).unwrap();
    drop(connection);
    let error = SqliteMessageStore::open(dir.path(), MessageStoreSettings::default()).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found: 9, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn failed_batch_in_group_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        durability: Durability::GroupCommit {
            max_delay: Duration::from_millis(50),
            max_batch: 16,
        },
        ..MessageStoreSettings::default()
    };
    let store = std::sync::Arc::new(open(dir.path(), settings));
    store
        .submit(WriteBatch::new(INSTANCE).with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();
    // Every odd batch names a session that does not exist, so it fails inside the group while
    // the even ones commit.
    let futures: Vec<_> = (0..16u64)
        .map(|seq| {
            let client_id = if seq % 2 == 0 { "dev1" } else { "missing" };
            store.submit(WriteBatch::new(INSTANCE).with(enqueue(client_id, seq, b"m")))
        })
        .collect();
    for (seq, future) in futures.into_iter().enumerate() {
        let result = future.await;
        if seq % 2 == 0 {
            assert!(result.is_ok(), "batch {seq}: {result:?}");
        } else {
            assert!(
                matches!(result, Err(StoreError::SessionNotFound { .. })),
                "batch {seq}: {result:?}"
            );
        }
    }
    let state = store.load_all(INSTANCE).await.unwrap();
    let seqs: Vec<u64> = state.sessions[0]
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![0, 2, 4, 6, 8, 10, 12, 14]);
}

/// Returns the removal of `client_id` from `from` and its whole session written to `to`, the
/// unit that moves a session, with `queued` messages in its queue.
fn move_unit(client_id: &str, from: &str, to: &str, queued: u64) -> Vec<WriteBatch> {
    let removal = WriteBatch::new(from).with(WriteOp::RemoveSession {
        client_id: client_id.to_owned(),
    });
    let mut whole = WriteBatch::new(to).with(WriteOp::PutSession(session(client_id)));
    for seq in 1..=queued {
        whole.push(enqueue(client_id, seq, format!("m{seq}").as_bytes()));
    }
    vec![removal, whole]
}

fn queue_seqs(state: &switchyard_store::InstanceState) -> Vec<u64> {
    state.sessions[0]
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect()
}

#[tokio::test]
async fn atomic_submit_moves_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    write_full_session(&store).await;

    store
        .submit_atomic(move_unit("GID_a@@@dev1", INSTANCE, "mqtt-cn-sh01", 2))
        .await
        .expect("move commits");
    assert_eq!(store.stats().batches, 3, "the unit counts its two batches");
    drop(store);

    let store = open(dir.path(), MessageStoreSettings::default());
    let from = store.load_all(INSTANCE).await.unwrap();
    assert!(from.sessions.is_empty(), "{:?}", from.sessions);
    assert_eq!(from.retained.len(), 1, "retained messages stay");
    let to = store.load_all("mqtt-cn-sh01").await.unwrap();
    assert_eq!(to.sessions.len(), 1);
    assert_eq!(to.sessions[0].session, session("GID_a@@@dev1"));
    assert_eq!(queue_seqs(&to), vec![1, 2]);
}

#[tokio::test]
async fn atomic_submit_fails_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    write_full_session(&store).await;

    // The second batch fails on its third operation, after the first batch removed the
    // session, so the removal must be rolled back with it.
    let mut unit = move_unit("GID_a@@@dev1", INSTANCE, "mqtt-cn-sh01", 1);
    unit[1].push(enqueue("GID_a@@@missing", 1, b"x"));
    let error = store.submit_atomic(unit).await.unwrap_err();
    assert!(
        matches!(error, StoreError::SessionNotFound { ref client_id, .. } if client_id == "GID_a@@@missing"),
        "{error}"
    );
    assert_full_session(&store.load_all(INSTANCE).await.unwrap());
    let to = store.load_all("mqtt-cn-sh01").await.unwrap();
    assert!(to.sessions.is_empty(), "{:?}", to.sessions);

    // The counters were rolled back too: the session still takes messages where it was, and
    // the instance it did not reach still has no session to write to.
    store
        .submit(WriteBatch::new(INSTANCE).with(enqueue("GID_a@@@dev1", 3, b"third")))
        .await
        .expect("session is still stored on the first instance");
    let error = store
        .submit(WriteBatch::new("mqtt-cn-sh01").with(enqueue("GID_a@@@dev1", 3, b"x")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SessionNotFound { .. }),
        "{error}"
    );
    assert_eq!(
        store.stats().batches,
        2,
        "no batch of the failed unit counts"
    );
}

#[tokio::test]
async fn atomic_submit_respects_target_limit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_instance_bytes: 4096,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings.clone());
    let mut batch = WriteBatch::new("small").with(WriteOp::PutSession(session("dev1")));
    for seq in 1..=10 {
        batch.push(enqueue("dev1", seq, &[7; 200]));
    }
    store.submit(batch).await.unwrap();
    store
        .submit(WriteBatch::new("full").with(WriteOp::PutRetained(message("t", &[1; 3500]))))
        .await
        .unwrap();

    let mut unit = move_unit("dev1", "small", "full", 0);
    for seq in 1..=10 {
        unit[1].push(enqueue("dev1", seq, &[7; 200]));
    }
    let error = store.submit_atomic(unit).await.unwrap_err();
    assert!(
        matches!(error, StoreError::InstanceStorageFull { ref instance_id, .. } if instance_id == "full"),
        "{error}"
    );

    // Checked before reopening, because opening recounts the usage from the rows: the
    // counters of both instances must be back where they were before the unit.
    let state = store.load_all("small").await.unwrap();
    assert_eq!(queue_seqs(&state), (1..=10).collect::<Vec<u64>>());
    assert!(store.load_all("full").await.unwrap().sessions.is_empty());
    store
        .submit(WriteBatch::new("small").with(enqueue("dev1", 11, b"m")))
        .await
        .expect("the session still counts as stored on the instance it did not leave");
    let error = store
        .submit(WriteBatch::new("full").with(enqueue("dev1", 11, b"m")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SessionNotFound { .. }),
        "{error}"
    );
    store
        .submit(WriteBatch::new("full").with(WriteOp::PutRetained(message("u", &[1; 100]))))
        .await
        .expect("the bytes of the failed unit no longer count against the instance");

    drop(store);
    let store = open(dir.path(), settings);
    let state = store.load_all("small").await.unwrap();
    assert_eq!(queue_seqs(&state), (1..=11).collect::<Vec<u64>>());
    assert!(store.load_all("full").await.unwrap().sessions.is_empty());
}

#[tokio::test]
async fn atomic_submit_shares_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        durability: Durability::GroupCommit {
            max_delay: Duration::from_millis(50),
            max_batch: 16,
        },
        ..MessageStoreSettings::default()
    };
    let store = std::sync::Arc::new(open(dir.path(), settings));
    for client in ["dev0", "dev1", "dev2", "dev3"] {
        store
            .submit(WriteBatch::new("a").with(WriteOp::PutSession(session(client))))
            .await
            .unwrap();
    }
    let commits_before = store.stats().commits;
    // Units and single batches submitted while the writer is paused, so that all of them are
    // waiting when it resumes and one group takes them. The unit of dev3 fails, so it must
    // leave dev3 on `a` while the others commit around it.
    let pause = store.pause_writer();
    let mut futures = Vec::new();
    for (n, client) in ["dev0", "dev1", "dev2", "dev3"].into_iter().enumerate() {
        let mut unit = move_unit(client, "a", "b", 2);
        if client == "dev3" {
            unit[1].push(WriteOp::PutInflight {
                client_id: client.to_owned(),
                packet_id: 0,
                inflight: InflightMessage {
                    message: message("t", b"x"),
                    pubrel_sent: false,
                },
            });
        }
        futures.push(store.submit_atomic(unit));
        let retained = message(&format!("r/{n}"), b"r");
        futures.push(store.submit(WriteBatch::new("a").with(WriteOp::PutRetained(retained))));
    }
    drop(pause);
    let results: Vec<_> = {
        let mut results = Vec::new();
        for future in futures {
            results.push(future.await);
        }
        results
    };
    for (n, result) in results.iter().enumerate() {
        if n == 6 {
            assert!(
                matches!(result, Err(StoreError::InvalidWrite { .. })),
                "write {n}: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "write {n}: {result:?}");
        }
    }
    assert_eq!(
        store.stats().commits - commits_before,
        1,
        "the units and the single batches shared one commit"
    );

    let a = store.load_all("a").await.unwrap();
    let on_a: Vec<&str> = a
        .sessions
        .iter()
        .map(|state| state.session.client_id.as_str())
        .collect();
    assert_eq!(on_a, vec!["dev3"]);
    assert_eq!(a.retained.len(), 4);
    let b = store.load_all("b").await.unwrap();
    let on_b: Vec<&str> = b
        .sessions
        .iter()
        .map(|state| state.session.client_id.as_str())
        .collect();
    assert_eq!(on_b, vec!["dev0", "dev1", "dev2"]);
    for state in &b.sessions {
        assert_eq!(state.queue.len(), 2, "{}", state.session.client_id);
    }
}

#[tokio::test]
async fn empty_atomic_submit_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), MessageStoreSettings::default());
    store.submit_atomic(Vec::new()).await.unwrap();
    assert_eq!(store.stats().commits, 0);
}

#[tokio::test]
async fn submits_commit_in_call_order_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_pending_batches: 1,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings);

    // With the writer paused and one slot, every write after the first waits in the store.
    // Each one replaces the retained message of one topic, so the last to commit wins.
    let pause = store.pause_writer();
    let mut writes: Vec<_> = (0..20u8)
        .map(|n| {
            let retained = message("t", &[n]);
            store.submit(WriteBatch::new(INSTANCE).with(WriteOp::PutRetained(retained)))
        })
        .collect();
    let loaded = store.load_all(INSTANCE);
    drop(pause);

    // Polled from the last call to the first, which must not change the commit order.
    writes.reverse();
    for write in writes {
        write.await.expect("write commits");
    }
    let state = loaded.await.unwrap();
    assert_eq!(state.retained.len(), 1);
    assert_eq!(
        state.retained[0].payload,
        vec![19],
        "the load sees every write called before it"
    );
    let state = store.load_all(INSTANCE).await.unwrap();
    assert_eq!(state.retained[0].payload, vec![19]);
}

#[tokio::test]
async fn atomic_submit_keeps_call_order_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MessageStoreSettings {
        max_pending_batches: 1,
        ..MessageStoreSettings::default()
    };
    let store = open(dir.path(), settings);
    store
        .submit(WriteBatch::new("a").with(WriteOp::PutSession(session("dev1"))))
        .await
        .unwrap();

    // A publish to the session is called before its move, as the broker does under its
    // registry lock, and the move is polled first, as the taking side does.
    let pause = store.pause_writer();
    let filler = store.submit(WriteBatch::new("a").with(WriteOp::PutRetained(message("t", b"f"))));
    let publish = store.submit(WriteBatch::new("a").with(enqueue("dev1", 1, b"m")));
    let mut unit = move_unit("dev1", "a", "b", 0);
    unit[1].push(enqueue("dev1", 1, b"m"));
    let moved = store.submit_atomic(unit);
    drop(pause);

    moved.await.expect("move commits");
    publish
        .await
        .expect("the publish commits before the move removes the session");
    filler.await.unwrap();
    assert!(store.load_all("a").await.unwrap().sessions.is_empty());
    let b = store.load_all("b").await.unwrap();
    assert_eq!(queue_seqs(&b), vec![1]);
}
