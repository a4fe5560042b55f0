//! The Group IDs of every instance: those declared in the configuration file and those created
//! through `CreateGroupId`, kept in the control-plane store, and the logins that accept them.
//!
//! The two sources are layers. Configured Group IDs are never written to the store, so the
//! file stays their only source: `ListGroupId` lists them, `CreateGroupId` of one fails with
//! `GroupIdAlreadyExsited`, and `DeleteGroupId` of one fails with `ParameterFieldCheckFailed`
//! (remove it from the file instead). Created Group IDs are stored with an audit record and
//! survive restarts.
//!
//! A disaster-recovery group shares its Group IDs: a login on any member accepts the Group IDs
//! of every member, because the global endpoint may move a device to any of them. Each record
//! still belongs to the instance it was created on, so creating the same Group ID on two
//! members stores two records, and deleting it on one member keeps it valid while the other
//! member has it.
//!
//! A change applies to the next CONNECT on every affected instance. Deleting a Group ID does
//! not disconnect the clients that use it; they are rejected when they reconnect.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_api::{ActionContext, GroupIdBackend, GroupIdInfo, Principal, ServiceError, Tag};
use switchyard_store::{
    AuditRecord, GroupIdCreated, GroupIdDeleted, GroupIdRecord, GroupIdTag, Store, StoreError,
};
use tracing::{error, info, warn};

use crate::authenticator::PolicyAuthenticator;

/// The configuration of one instance, as the service needs it.
pub struct GroupIdInstance {
    pub id: String,
    pub account_id: String,
    /// The disaster-recovery group the instance belongs to, if any.
    pub dr_group: Option<String>,
    /// The instances whose Group IDs logins on this one accept: this instance first, then the
    /// other members of its disaster-recovery group.
    pub sharing: Vec<String>,
    /// The `group_ids` of the instance in the configuration file.
    pub configured: BTreeSet<String>,
    /// The most Group IDs `CreateGroupId` may store for the instance; configured ones do not
    /// count.
    pub max_group_ids: usize,
    pub authenticator: Arc<PolicyAuthenticator>,
}

/// The [`GroupIdBackend`] of a deployment.
pub struct GroupIdService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    instances: HashMap<String, GroupIdInstance>,
    /// The stored records, by instance and Group ID. Changed only while `changes` is held, and
    /// only after the store has committed the change.
    // NOTE: this copy is loaded once and then changed only by this process, so a store shared
    // by several processes would need a change feed to keep every copy current.
    records: Mutex<HashMap<String, BTreeMap<String, GroupIdRecord>>>,
    /// Serializes each store write with the update of `records` and of the logins after it,
    /// so that they apply in the order the store committed them. Held only on blocking
    /// threads, never across an await.
    changes: Mutex<()>,
    /// Creation and update time reported for configured Group IDs: when this process loaded
    /// the configuration, in milliseconds since the Unix epoch.
    config_time_ms: i64,
}

impl GroupIdService {
    /// Loads the stored Group IDs and gives every instance's logins its Group IDs. It reads
    /// the store, so async callers run it on a blocking thread.
    ///
    /// Stored records of instances that are not configured are kept in the store but ignored,
    /// with a warning.
    pub fn load(
        store: Arc<dyn Store>,
        instances: Vec<GroupIdInstance>,
    ) -> Result<GroupIdService, StoreError> {
        let instances: HashMap<String, GroupIdInstance> = instances
            .into_iter()
            .map(|instance| (instance.id.clone(), instance))
            .collect();
        let mut records: HashMap<String, BTreeMap<String, GroupIdRecord>> = HashMap::new();
        for record in store.load_group_ids()? {
            if !instances.contains_key(&record.instance_id) {
                warn!(
                    instance = %record.instance_id,
                    group_id = %record.group_id,
                    "Stored Group ID names an instance that is not configured; ignoring it"
                );
                continue;
            }
            records
                .entry(record.instance_id.clone())
                .or_default()
                .insert(record.group_id.clone(), record);
        }

        let inner = Inner {
            store,
            instances,
            records: Mutex::new(records),
            changes: Mutex::new(()),
            config_time_ms: unix_millis(),
        };
        {
            let records = inner.lock_records();
            for instance in inner.instances.values() {
                instance
                    .authenticator
                    .set_group_ids(inner.accepted(&records, instance));
            }
        }
        Ok(GroupIdService {
            inner: Arc::new(inner),
        })
    }

    async fn create(
        &self,
        ctx: &ActionContext,
        instance_id: &str,
        group_id: &str,
        tags: &[Tag],
    ) -> Result<(), ServiceError> {
        let instance = self.inner.instance(ctx, instance_id)?;
        if instance.configured.contains(group_id) {
            return Err(ServiceError::GroupIdAlreadyExists {
                message: format!(
                    "Group ID {group_id} already exists on instance {instance_id}: the \
                     configuration file declares it in group_ids."
                ),
            });
        }

        let time_ms = unix_millis();
        let record = GroupIdRecord {
            instance_id: instance_id.to_owned(),
            group_id: group_id.to_owned(),
            create_time_ms: time_ms,
            update_time_ms: time_ms,
            tags: tags
                .iter()
                .map(|tag| GroupIdTag {
                    key: tag.key.clone(),
                    value: tag.value.clone(),
                })
                .collect(),
        };
        let mut audit = audit_record(ctx, instance, group_id, time_ms, "absent", "registered");
        if !tags.is_empty() {
            let listed: Vec<String> = tags
                .iter()
                .map(|tag| format!("{}={}", tag.key, tag.value))
                .collect();
            audit.note = Some(format!("tags: {}", listed.join(", ")));
        }

        let inner = self.inner.clone();
        let limit = instance.max_group_ids;
        let outcome = run_blocking(ctx, instance_id, group_id, move || {
            inner.commit_create(record, &audit, limit)
        })
        .await?;
        let Some(outcome) = outcome else {
            return Err(ServiceError::ParameterFieldCheckFailed {
                message: format!(
                    "Group ID {group_id} was not created: instance {instance_id} already has \
                     {limit} Group IDs created through the API, its max_group_ids. Delete \
                     unused ones with DeleteGroupId, or raise max_group_ids for the instance \
                     in the configuration file and restart."
                ),
            });
        };
        match outcome {
            GroupIdCreated::Created(audit_id) => {
                info!(
                    instance = %instance_id,
                    group_id,
                    request_id = %ctx.request_id,
                    %audit_id,
                    "Group ID created"
                );
                Ok(())
            }
            GroupIdCreated::AlreadyExists => Err(ServiceError::GroupIdAlreadyExists {
                message: format!(
                    "Group ID {group_id} already exists on instance {instance_id}. Use it as \
                     it is, or delete it first with DeleteGroupId."
                ),
            }),
        }
    }

    async fn delete(
        &self,
        ctx: &ActionContext,
        instance_id: &str,
        group_id: &str,
    ) -> Result<(), ServiceError> {
        let instance = self.inner.instance(ctx, instance_id)?;
        if instance.configured.contains(group_id) {
            return Err(ServiceError::ParameterFieldCheckFailed {
                message: format!(
                    "Group ID {group_id} of instance {instance_id} is declared in the \
                     configuration file, so the API cannot delete it. Remove it from the \
                     instance's group_ids and restart Switchyard."
                ),
            });
        }

        let time_ms = unix_millis();
        let audit = audit_record(ctx, instance, group_id, time_ms, "registered", "absent");
        let inner = self.inner.clone();
        let stored_instance = instance_id.to_owned();
        let stored_group = group_id.to_owned();
        let outcome = run_blocking(ctx, instance_id, group_id, move || {
            inner.commit_delete(&stored_instance, &stored_group, &audit)
        })
        .await?;
        match outcome {
            GroupIdDeleted::Deleted(audit_id) => {
                info!(
                    instance = %instance_id,
                    group_id,
                    request_id = %ctx.request_id,
                    %audit_id,
                    "Group ID deleted"
                );
                Ok(())
            }
            GroupIdDeleted::NotFound => Err(self.inner.not_registered(instance, group_id)),
        }
    }

    fn list(
        &self,
        ctx: &ActionContext,
        instance_id: &str,
    ) -> Result<Vec<GroupIdInfo>, ServiceError> {
        let instance = self.inner.instance(ctx, instance_id)?;
        let records = self.inner.lock_records();
        let mut listed: BTreeMap<String, GroupIdInfo> = BTreeMap::new();

        // The listed instance comes first in `sharing`, and its stored record first within
        // it, so a Group ID both the listed instance and another member have shows the listed
        // instance's own entry.
        for member_id in &instance.sharing {
            for record in records.get(member_id).into_iter().flat_map(|r| r.values()) {
                listed
                    .entry(record.group_id.clone())
                    .or_insert_with(|| stored_info(record));
            }
            let configured = self
                .inner
                .instances
                .get(member_id)
                .into_iter()
                .flat_map(|member| member.configured.iter());
            for group_id in configured {
                listed
                    .entry(group_id.clone())
                    .or_insert_with(|| GroupIdInfo {
                        group_id: group_id.clone(),
                        instance_id: member_id.clone(),
                        create_time_ms: self.inner.config_time_ms,
                        update_time_ms: self.inner.config_time_ms,
                        tags: Vec::new(),
                    });
            }
        }
        Ok(listed.into_values().collect())
    }
}

// === impl Inner ===

impl Inner {
    fn lock_records(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, GroupIdRecord>>> {
        // A panic while the lock was held cannot leave a half-made change: every change is one
        // insert or remove, made after the store committed it.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Finds the instance of a call and checks that the caller's account owns it.
    fn instance(
        &self,
        ctx: &ActionContext,
        instance_id: &str,
    ) -> Result<&GroupIdInstance, ServiceError> {
        let Some(instance) = self.instances.get(instance_id) else {
            return Err(ServiceError::InstanceNotFound {
                message: format!(
                    "Instance {instance_id} was not found on this server. Check the \
                     InstanceId parameter."
                ),
            });
        };
        let account_id = &ctx.caller.account_id;
        if &instance.account_id != account_id {
            return Err(ServiceError::InstancePermissionCheckFailed {
                message: format!(
                    "Instance {instance_id} is not owned by account {account_id}. Sign the \
                     request with an AccessKey of the account that owns the instance."
                ),
            });
        }
        Ok(instance)
    }

    /// Returns the Group IDs logins on `instance` accept: the configured and stored ones of
    /// every instance it shares with.
    fn accepted(
        &self,
        records: &HashMap<String, BTreeMap<String, GroupIdRecord>>,
        instance: &GroupIdInstance,
    ) -> HashSet<String> {
        let mut accepted = HashSet::new();
        for member_id in &instance.sharing {
            if let Some(member) = self.instances.get(member_id) {
                accepted.extend(member.configured.iter().cloned());
            }
            if let Some(stored) = records.get(member_id) {
                accepted.extend(stored.keys().cloned());
            }
        }
        accepted
    }

    /// Gives new Group ID sets to the logins of every instance that shares with `changed`.
    fn refresh_logins(
        &self,
        records: &HashMap<String, BTreeMap<String, GroupIdRecord>>,
        changed: &str,
    ) {
        for instance in self.instances.values() {
            if instance.sharing.iter().any(|id| id == changed) {
                instance
                    .authenticator
                    .set_group_ids(self.accepted(records, instance));
            }
        }
    }

    /// Stores a new Group ID and applies it to the logins, or returns `None` without writing
    /// when the instance already has `limit` stored Group IDs.
    fn commit_create(
        &self,
        record: GroupIdRecord,
        audit: &AuditRecord,
        limit: usize,
    ) -> Result<Option<GroupIdCreated>, StoreError> {
        let _serialized = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        // A Group ID the instance already has is left to the store to report as existing.
        let full = self
            .lock_records()
            .get(&record.instance_id)
            .is_some_and(|stored| stored.len() >= limit && !stored.contains_key(&record.group_id));
        if full {
            return Ok(None);
        }
        let outcome = self.store.create_group_id(&record, audit)?;
        if let GroupIdCreated::Created(_) = outcome {
            let mut records = self.lock_records();
            let instance_id = record.instance_id.clone();
            records
                .entry(instance_id.clone())
                .or_default()
                .insert(record.group_id.clone(), record);
            self.refresh_logins(&records, &instance_id);
        }
        Ok(Some(outcome))
    }

    fn commit_delete(
        &self,
        instance_id: &str,
        group_id: &str,
        audit: &AuditRecord,
    ) -> Result<GroupIdDeleted, StoreError> {
        let _serialized = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = self.store.delete_group_id(instance_id, group_id, audit)?;
        if let GroupIdDeleted::Deleted(_) = outcome {
            let mut records = self.lock_records();
            if let Some(stored) = records.get_mut(instance_id) {
                stored.remove(group_id);
            }
            self.refresh_logins(&records, instance_id);
        }
        Ok(outcome)
    }

    /// Builds the error of a `DeleteGroupId` of a Group ID the instance has no record of. It
    /// names the group member that has the Group ID, if one does.
    fn not_registered(&self, instance: &GroupIdInstance, group_id: &str) -> ServiceError {
        let records = self.lock_records();
        let holder = instance.sharing.iter().skip(1).find(|member_id| {
            let stored = records
                .get(*member_id)
                .is_some_and(|stored| stored.contains_key(group_id));
            let configured = self
                .instances
                .get(*member_id)
                .is_some_and(|member| member.configured.contains(group_id));
            stored || configured
        });
        let message = match (holder, &instance.dr_group) {
            (Some(holder), Some(dr_group)) => format!(
                "Group ID {group_id} is not registered on instance {}. It is registered on \
                 {holder}, a member of the same disaster-recovery group {dr_group}, so call \
                 DeleteGroupId with InstanceId {holder} to remove it.",
                instance.id
            ),
            _ => format!(
                "Group ID {group_id} is not registered on instance {}. Check the GroupId and \
                 InstanceId parameters; ListGroupId lists the Group IDs of the instance.",
                instance.id
            ),
        };
        ServiceError::ParameterFieldCheckFailed { message }
    }
}

impl GroupIdBackend for GroupIdService {
    fn create_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
        tags: &'a [Tag],
    ) -> Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>> {
        Box::pin(self.create(ctx, instance_id, group_id, tags))
    }

    fn delete_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>> {
        Box::pin(self.delete(ctx, instance_id, group_id))
    }

    fn list_group_ids<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<GroupIdInfo>, ServiceError>> + Send + 'a>> {
        Box::pin(std::future::ready(self.list(ctx, instance_id)))
    }
}

/// Runs a store change of `group_id` on `instance_id` on a blocking thread, mapping any failure
/// to `InternalError`.
async fn run_blocking<T, F>(
    ctx: &ActionContext,
    instance_id: &str,
    group_id: &str,
    operation: F,
) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let failure = match tokio::task::spawn_blocking(operation).await {
        Ok(Ok(outcome)) => return Ok(outcome),
        Ok(Err(err)) => err.to_string(),
        Err(join_error) => format!("store task failed: {join_error}"),
    };
    error!(
        error = %failure,
        action = %ctx.action,
        instance = %instance_id,
        group_id,
        request_id = %ctx.request_id,
        "Failed to store a Group ID change, so nothing changed"
    );
    // The caller gets the outcome; the file path and SQLite detail stay in the server log.
    Err(ServiceError::Internal {
        message: "The Group ID change could not be stored, so nothing changed. Try again \
                  later; the server log has the cause."
            .to_owned(),
    })
}

fn stored_info(record: &GroupIdRecord) -> GroupIdInfo {
    GroupIdInfo {
        group_id: record.group_id.clone(),
        instance_id: record.instance_id.clone(),
        create_time_ms: record.create_time_ms,
        update_time_ms: record.update_time_ms,
        tags: record
            .tags
            .iter()
            .map(|tag| Tag {
                key: tag.key.clone(),
                value: tag.value.clone(),
            })
            .collect(),
    }
}

/// Builds the audit record of a Group ID change. `before` and `after` are `absent` or
/// `registered`, written as `<GroupId>=<state>`.
fn audit_record(
    ctx: &ActionContext,
    instance: &GroupIdInstance,
    group_id: &str,
    time_ms: i64,
    before: &str,
    after: &str,
) -> AuditRecord {
    AuditRecord {
        time_ms,
        request_id: ctx.request_id.clone(),
        account_id: ctx.caller.account_id.clone(),
        principal: match &ctx.caller.principal {
            Principal::Root => "root".to_owned(),
            Principal::RamUser(name) => format!("ram-user:{name}"),
        },
        access_key_id: ctx.caller.access_key_id.clone(),
        source_ip: ctx.source_ip.map(|ip| ip.to_string()),
        action: ctx.action.clone(),
        group_id: instance.dr_group.clone().unwrap_or_default(),
        instance_id: instance.id.clone(),
        target_instance_id: instance.id.clone(),
        before: format!("{group_id}={before}"),
        after: format!("{group_id}={after}"),
        note: None,
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
