//! `GroupIdService` against a real SQLite store in a temporary directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::{ActionContext, Caller, GroupIdBackend, Principal, ServiceError, Tag};
use switchyard_auth::InstanceAuthPolicy;
use switchyard_store::{SqliteSettings, SqliteStore, Store};

use super::{GroupIdInstance, GroupIdService};
use crate::authenticator::PolicyAuthenticator;

const ACCOUNT: &str = "1000000000000001";

/// The deployment of every test: `mqtt-cn-hz01` and `mqtt-cn-sh01` in group `global`,
/// `mqtt-cn-solo` alone, `mqtt-cn-other` of another account. Every instance declares
/// `GID_config` in its configuration.
struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    service: GroupIdService,
    logins: Vec<(String, Arc<PolicyAuthenticator>)>,
}

fn open_store(dir: &Path, busy_timeout: Duration) -> Arc<dyn Store> {
    let settings = SqliteSettings { busy_timeout };
    Arc::new(SqliteStore::open(dir, settings).expect("open the store"))
}

fn instances() -> (
    Vec<GroupIdInstance>,
    Vec<(String, Arc<PolicyAuthenticator>)>,
) {
    let layout: [(&str, &str, Option<&str>, &[&str]); 4] = [
        (
            "mqtt-cn-hz01",
            ACCOUNT,
            Some("global"),
            &["mqtt-cn-hz01", "mqtt-cn-sh01"],
        ),
        (
            "mqtt-cn-sh01",
            ACCOUNT,
            Some("global"),
            &["mqtt-cn-sh01", "mqtt-cn-hz01"],
        ),
        ("mqtt-cn-solo", ACCOUNT, None, &["mqtt-cn-solo"]),
        (
            "mqtt-cn-other",
            "2000000000000002",
            None,
            &["mqtt-cn-other"],
        ),
    ];
    let mut instances = Vec::new();
    let mut logins = Vec::new();
    for (id, account_id, dr_group, sharing) in layout {
        let authenticator = Arc::new(PolicyAuthenticator::new(InstanceAuthPolicy::new(id)));
        logins.push((id.to_owned(), authenticator.clone()));
        instances.push(GroupIdInstance {
            id: id.to_owned(),
            account_id: account_id.to_owned(),
            dr_group: dr_group.map(str::to_owned),
            sharing: sharing.iter().map(|s| (*s).to_owned()).collect(),
            configured: BTreeSet::from(["GID_config".to_owned()]),
            max_group_ids: if id == "mqtt-cn-solo" {
                SOLO_MAX_GROUP_IDS
            } else {
                1000
            },
            authenticator,
        });
    }
    (instances, logins)
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_busy_timeout(Duration::from_secs(5))
    }

    fn with_busy_timeout(busy_timeout: Duration) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = open_store(dir.path(), busy_timeout);
        let (instances, logins) = instances();
        let service = GroupIdService::load(store.clone(), instances).expect("load");
        Fixture {
            dir,
            store,
            service,
            logins,
        }
    }

    /// Builds a second service on the same store, as a restart does.
    fn restarted(&self) -> (GroupIdService, Vec<(String, Arc<PolicyAuthenticator>)>) {
        let (instances, logins) = instances();
        let service = GroupIdService::load(self.store.clone(), instances).expect("reload");
        (service, logins)
    }

    async fn create(&self, instance_id: &str, group_id: &str) -> Result<(), ServiceError> {
        let ctx = context("CreateGroupId", ACCOUNT);
        self.service
            .create_group_id(&ctx, instance_id, group_id, &[])
            .await
    }

    async fn delete(&self, instance_id: &str, group_id: &str) -> Result<(), ServiceError> {
        let ctx = context("DeleteGroupId", ACCOUNT);
        self.service
            .delete_group_id(&ctx, instance_id, group_id)
            .await
    }

    /// Returns the instances whose logins accept `group_id`.
    fn accepting(&self, group_id: &str) -> Vec<&str> {
        accepting(&self.logins, group_id)
    }
}

fn accepting<'a>(logins: &'a [(String, Arc<PolicyAuthenticator>)], group_id: &str) -> Vec<&'a str> {
    logins
        .iter()
        .filter(|(_, login)| login.accepts_group_id(group_id))
        .map(|(id, _)| id.as_str())
        .collect()
}

fn context(action: &str, account_id: &str) -> ActionContext {
    ActionContext {
        request_id: "5E0C8F3A-1B2C-4D5E-8F90-A1B2C3D4E5F6".to_owned(),
        caller: Caller {
            account_id: account_id.to_owned(),
            access_key_id: "LTAIroot".to_owned(),
            principal: Principal::RamUser("ops".to_owned()),
        },
        action: action.to_owned(),
        source_ip: None,
    }
}

fn code_of(result: Result<(), ServiceError>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("{error:?}")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

async fn list(service: &GroupIdService, instance_id: &str) -> Vec<(String, String)> {
    let ctx = context("ListGroupId", ACCOUNT);
    let listed = service
        .list_group_ids(&ctx, instance_id)
        .await
        .expect("list");
    listed
        .into_iter()
        .map(|info| (info.group_id, info.instance_id))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn configured_group_ids_are_accepted_at_load() {
    let fixture = Fixture::new();
    assert_eq!(fixture.accepting("GID_config").len(), 4);
    assert!(fixture.accepting("GID_new").is_empty());
}

#[tokio::test]
async fn created_group_id_is_accepted_by_dr_group() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_new")
        .await
        .expect("create");
    assert_eq!(
        fixture.accepting("GID_new"),
        ["mqtt-cn-hz01", "mqtt-cn-sh01"]
    );

    fixture
        .create("mqtt-cn-solo", "GID_solo")
        .await
        .expect("create");
    assert_eq!(fixture.accepting("GID_solo"), ["mqtt-cn-solo"]);
}

#[tokio::test]
async fn deleted_group_id_is_refused() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_new")
        .await
        .expect("create");
    fixture
        .delete("mqtt-cn-hz01", "GID_new")
        .await
        .expect("delete");
    assert!(fixture.accepting("GID_new").is_empty());
    assert!(
        list(&fixture.service, "mqtt-cn-hz01")
            .await
            .iter()
            .all(|(group_id, _)| group_id != "GID_new")
    );
}

#[tokio::test]
async fn group_id_on_two_members_survives_one_delete() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_both")
        .await
        .expect("create");
    fixture
        .create("mqtt-cn-sh01", "GID_both")
        .await
        .expect("create");
    fixture
        .delete("mqtt-cn-hz01", "GID_both")
        .await
        .expect("delete");
    assert_eq!(
        fixture.accepting("GID_both"),
        ["mqtt-cn-hz01", "mqtt-cn-sh01"]
    );
    fixture
        .delete("mqtt-cn-sh01", "GID_both")
        .await
        .expect("delete");
    assert!(fixture.accepting("GID_both").is_empty());
}

#[tokio::test]
async fn duplicate_create_is_group_id_already_exists() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_new")
        .await
        .expect("create");
    let again = fixture.create("mqtt-cn-hz01", "GID_new").await;
    assert_eq!(code_of(again), "GroupIdAlreadyExists");
    let configured = fixture.create("mqtt-cn-hz01", "GID_config").await;
    let Err(ServiceError::GroupIdAlreadyExists { message }) = configured else {
        panic!("configured Group ID was created again: {configured:?}");
    };
    assert!(message.contains("configuration file"), "{message}");
}

/// The `max_group_ids` of `mqtt-cn-solo` in the fixture.
const SOLO_MAX_GROUP_IDS: usize = 2;

#[tokio::test]
async fn create_stops_at_max_group_ids() {
    let fixture = Fixture::new();
    for group_id in ["GID_first", "GID_second"] {
        fixture
            .create("mqtt-cn-solo", group_id)
            .await
            .expect("create under the limit");
    }
    let refused = fixture.create("mqtt-cn-solo", "GID_third").await;
    let Err(ServiceError::ParameterFieldCheckFailed { message }) = refused else {
        panic!("a Group ID past max_group_ids was created: {refused:?}");
    };
    assert!(message.contains("max_group_ids"), "{message}");
    assert!(
        message.contains(&SOLO_MAX_GROUP_IDS.to_string()),
        "{message}"
    );
    assert!(fixture.accepting("GID_third").is_empty());

    // At the limit, an existing Group ID is still reported as existing, and a delete makes room.
    let again = fixture.create("mqtt-cn-solo", "GID_first").await;
    assert_eq!(code_of(again), "GroupIdAlreadyExists");
    fixture
        .delete("mqtt-cn-solo", "GID_first")
        .await
        .expect("delete");
    fixture
        .create("mqtt-cn-solo", "GID_third")
        .await
        .expect("create after a delete");
    assert_eq!(fixture.accepting("GID_third"), vec!["mqtt-cn-solo"]);
}

#[tokio::test]
async fn configured_group_id_cannot_be_deleted() {
    let fixture = Fixture::new();
    let result = fixture.delete("mqtt-cn-hz01", "GID_config").await;
    let Err(ServiceError::ParameterFieldCheckFailed { message }) = result else {
        panic!("configured Group ID was deleted: {result:?}");
    };
    assert!(message.contains("group_ids"), "{message}");
    assert_eq!(fixture.accepting("GID_config").len(), 4);
}

#[tokio::test]
async fn delete_of_unknown_group_id_names_holder() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_new")
        .await
        .expect("create");

    let result = fixture.delete("mqtt-cn-sh01", "GID_new").await;
    let Err(ServiceError::ParameterFieldCheckFailed { message }) = result else {
        panic!("{result:?}");
    };
    assert!(message.contains("registered on mqtt-cn-hz01"), "{message}");
    assert!(message.contains("InstanceId mqtt-cn-hz01"), "{message}");
    assert_eq!(
        fixture.accepting("GID_new"),
        ["mqtt-cn-hz01", "mqtt-cn-sh01"]
    );

    let result = fixture.delete("mqtt-cn-solo", "GID_nothing").await;
    let Err(ServiceError::ParameterFieldCheckFailed { message }) = result else {
        panic!("{result:?}");
    };
    assert!(
        message.contains("GID_nothing is not registered"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_and_foreign_instances_are_rejected() {
    let fixture = Fixture::new();
    let unknown = fixture.create("mqtt-cn-nowhere", "GID_new").await;
    assert_eq!(code_of(unknown), "InstanceNotFound");
    let foreign = fixture.create("mqtt-cn-other", "GID_new").await;
    let Err(ServiceError::InstancePermissionCheckFailed { message }) = foreign else {
        panic!("{foreign:?}");
    };
    assert!(message.contains(ACCOUNT), "{message}");
    let deleted = fixture.delete("mqtt-cn-nowhere", "GID_new").await;
    assert_eq!(code_of(deleted), "InstanceNotFound");
    let ctx = context("ListGroupId", ACCOUNT);
    let listed = fixture.service.list_group_ids(&ctx, "mqtt-cn-other").await;
    assert!(matches!(
        listed,
        Err(ServiceError::InstancePermissionCheckFailed { .. })
    ));
    assert!(fixture.accepting("GID_new").is_empty());
}

#[tokio::test]
async fn created_group_ids_survive_restart() {
    let fixture = Fixture::new();
    let tags = [Tag {
        key: "team".to_owned(),
        value: "fleet".to_owned(),
    }];
    let ctx = context("CreateGroupId", ACCOUNT);
    fixture
        .service
        .create_group_id(&ctx, "mqtt-cn-sh01", "GID_kept", &tags)
        .await
        .expect("create");

    let (service, logins) = fixture.restarted();
    assert_eq!(
        accepting(&logins, "GID_kept"),
        ["mqtt-cn-hz01", "mqtt-cn-sh01"]
    );
    let ctx = context("ListGroupId", ACCOUNT);
    let listed = service
        .list_group_ids(&ctx, "mqtt-cn-sh01")
        .await
        .expect("list");
    let kept_info = listed
        .iter()
        .find(|info| info.group_id == "GID_kept")
        .expect("GID_kept is listed");
    assert_eq!(kept_info.instance_id, "mqtt-cn-sh01");
    assert_eq!(kept_info.tags, tags);
    assert_eq!(kept_info.create_time_ms, kept_info.update_time_ms);
}

#[tokio::test]
async fn list_shows_own_then_member_entries() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_hz")
        .await
        .expect("create");
    fixture
        .create("mqtt-cn-hz01", "GID_both")
        .await
        .expect("create");
    fixture
        .create("mqtt-cn-sh01", "GID_both")
        .await
        .expect("create");

    assert_eq!(
        list(&fixture.service, "mqtt-cn-sh01").await,
        pairs(&[
            ("GID_both", "mqtt-cn-sh01"),
            ("GID_config", "mqtt-cn-sh01"),
            ("GID_hz", "mqtt-cn-hz01"),
        ])
    );
    assert_eq!(
        list(&fixture.service, "mqtt-cn-solo").await,
        pairs(&[("GID_config", "mqtt-cn-solo")])
    );
}

#[tokio::test]
async fn changes_are_audited() {
    let fixture = Fixture::new();
    fixture
        .create("mqtt-cn-hz01", "GID_new")
        .await
        .expect("create");
    fixture
        .delete("mqtt-cn-hz01", "GID_new")
        .await
        .expect("delete");
    // Rejected calls change nothing and are not audited.
    let _ = fixture.create("mqtt-cn-hz01", "GID_config").await;
    let _ = fixture.delete("mqtt-cn-hz01", "GID_new").await;

    let log = fixture.store.audit_records(None, 10).expect("audit log");
    assert_eq!(log.len(), 2);
    let (_, created) = &log[0];
    assert_eq!(created.action, "CreateGroupId");
    assert_eq!(created.instance_id, "mqtt-cn-hz01");
    assert_eq!(created.group_id, "global");
    assert_eq!(created.principal, "ram-user:ops");
    assert_eq!(created.before, "GID_new=absent");
    assert_eq!(created.after, "GID_new=registered");
    let (_, deleted) = &log[1];
    assert_eq!(deleted.action, "DeleteGroupId");
    assert_eq!(deleted.before, "GID_new=registered");
    assert_eq!(deleted.after, "GID_new=absent");
}

#[tokio::test]
async fn failed_store_write_changes_nothing() {
    let fixture = Fixture::with_busy_timeout(Duration::from_millis(100));
    fixture
        .create("mqtt-cn-hz01", "GID_kept")
        .await
        .expect("create");
    let path = fixture
        .dir
        .path()
        .join(switchyard_store::DATABASE_FILE_NAME);
    let locker = rusqlite_lock(&path);

    let created = fixture.create("mqtt-cn-hz01", "GID_new").await;
    let Err(ServiceError::Internal { message }) = created else {
        panic!("{created:?}");
    };
    assert!(message.contains("nothing changed"), "{message}");
    assert_eq!(
        code_of(fixture.delete("mqtt-cn-hz01", "GID_kept").await),
        "Internal"
    );

    drop(locker);
    assert!(fixture.accepting("GID_new").is_empty());
    assert_eq!(fixture.accepting("GID_kept").len(), 2);
    let (_, logins) = fixture.restarted();
    assert!(accepting(&logins, "GID_new").is_empty());
    assert_eq!(accepting(&logins, "GID_kept").len(), 2);
}

/// Opens a second SQLite connection to `path` that holds the write lock until dropped.
fn rusqlite_lock(path: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).expect("open a second connection");
    connection
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    connection
}
