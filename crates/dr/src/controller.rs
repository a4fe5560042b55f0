//! `DisasterDowngrade` and `DisasterRecovery`: the checks, the durable state change, the audit
//! record, the paced disconnection of devices that reached a downgraded member through a
//! global endpoint, and the optional paced rebalance back to a recovered member.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_api::{ActionContext, DisasterRecoveryBackend, Principal, ServiceError};
use switchyard_broker::{ConnectionHandle, Origin};
use switchyard_codec::ReasonCode;
use switchyard_store::{AuditRecord, Store, StoreError};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::members::{Group, Member, Registry};
use crate::routing::named_instance;

/// One of the two DR actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrAction {
    Downgrade,
    Recovery,
}

impl DrAction {
    fn name(self) -> &'static str {
        match self {
            DrAction::Downgrade => "DisasterDowngrade",
            DrAction::Recovery => "DisasterRecovery",
        }
    }

    /// Name of the request parameter that carries the target member.
    fn target_parameter(self) -> &'static str {
        match self {
            DrAction::Downgrade => "DowngradeInstanceId",
            DrAction::Recovery => "RecoveryInstanceId",
        }
    }

    /// The global-endpoint access the target has after the action.
    fn access_after(self) -> bool {
        self == DrAction::Recovery
    }
}

/// Carries out the DR actions on the deployment's registry and store.
pub struct DrController {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    /// Serializes state changes so the last-member rule sees every earlier change.
    changes: Mutex<()>,
}

impl DrController {
    /// Builds the controller and applies the access flags stored by earlier runs.
    pub fn new(registry: Arc<Registry>, store: Arc<dyn Store>) -> Result<DrController, StoreError> {
        let stored = store.load_member_access()?;
        for (instance_id, access) in stored {
            match registry.member(&instance_id) {
                Some(member) => {
                    member.set_global_access(access);
                    if !access {
                        info!(instance = %instance_id, "Member starts downgraded, as stored");
                    }
                }
                None => warn!(
                    instance = %instance_id,
                    "Stored DR state names an instance that is not configured; ignoring it"
                ),
            }
        }
        Ok(DrController {
            registry,
            store,
            changes: Mutex::new(()),
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    async fn run(
        &self,
        action: DrAction,
        ctx: &ActionContext,
        instance_id: &str,
        target_id: &str,
    ) -> Result<(), ServiceError> {
        let (group, target) = self.check(action, ctx, instance_id, target_id)?;
        let _serialized = self.changes.lock().await;

        let before = target.has_global_access();
        let after = action.access_after();
        let mut audit = AuditRecord {
            time_ms: unix_millis(),
            request_id: ctx.request_id.clone(),
            account_id: ctx.caller.account_id.clone(),
            principal: principal_label(&ctx.caller.principal),
            access_key_id: ctx.caller.access_key_id.clone(),
            source_ip: ctx.source_ip.map(|ip| ip.to_string()),
            action: action.name().to_owned(),
            group_id: group.id().to_owned(),
            instance_id: instance_id.to_owned(),
            target_instance_id: target_id.to_owned(),
            before: access_label(before),
            after: access_label(after),
            note: None,
        };

        if before == after {
            audit.note = Some("no change: the member already had this state".to_owned());
            self.write(move |store| store.append_audit(&audit).map(drop))
                .await?;
            info!(action = action.name(), target = %target_id, "DR action changed nothing");
            return Ok(());
        }

        if action == DrAction::Downgrade {
            let others_with_access = group
                .members
                .iter()
                .filter(|m| m.id() != target_id && m.has_global_access());
            if others_with_access.count() == 0 {
                return Err(ServiceError::InvalidParameter {
                    name: action.target_parameter().to_owned(),
                    message: format!(
                        "DowngradeInstanceId {target_id} is the last member of disaster-recovery \
                         group {} with global-endpoint access, so the global endpoint would \
                         reject every device. Recover another member with DisasterRecovery \
                         first.",
                        group.id()
                    ),
                });
            }
        }

        let stored_id = target_id.to_owned();
        self.write(move |store| {
            store
                .commit_member_access(&stored_id, after, &audit)
                .map(drop)
        })
        .await?;
        target.set_global_access(after);
        info!(
            action = action.name(),
            group = %group.id(),
            target = %target_id,
            request_id = %ctx.request_id,
            "Member global-endpoint access is now {}",
            access_label(after)
        );

        let rate = group.settings.disconnect_rate_per_second;
        if action == DrAction::Downgrade {
            tokio::spawn(disconnect_paced(
                target.clone(),
                group.id().to_owned(),
                rate,
            ));
        } else if group.settings.rebalance_on_recovery {
            tokio::spawn(rebalance_paced(group.clone(), target.clone(), rate));
        }
        Ok(())
    }

    /// Runs the checks that come before any change, in the documented order: ownership, then
    /// edition and the DR flag, then membership of one group.
    fn check(
        &self,
        action: DrAction,
        ctx: &ActionContext,
        instance_id: &str,
        target_id: &str,
    ) -> Result<(Arc<Group>, Arc<Member>), ServiceError> {
        let account_id = &ctx.caller.account_id;
        let mut pair = Vec::with_capacity(2);
        for (parameter, id) in [
            ("InstanceId", instance_id),
            (action.target_parameter(), target_id),
        ] {
            let member = self
                .registry
                .member(id)
                .filter(|m| &m.info.account_id == account_id);
            let Some(member) = member else {
                return Err(ServiceError::InstancePermissionCheckFailed {
                    message: format!(
                        "{parameter} {id} does not exist or is not owned by account \
                         {account_id}. Check the instance id and the AccessKey used to sign."
                    ),
                });
            };
            pair.push((parameter, member.clone()));
        }

        for (parameter, member) in &pair {
            if !member.info.supports_disaster_recovery() {
                return Err(ServiceError::ApiNotSupport {
                    message: format!(
                        "{parameter} {} is a {} instance with disaster recovery {}; {} needs a \
                         platinum instance with disaster recovery enabled.",
                        member.id(),
                        member.info.edition,
                        if member.info.disaster_recovery {
                            "enabled"
                        } else {
                            "disabled"
                        },
                        action.name()
                    ),
                });
            }
        }

        let Some(group) = self.registry.shared_group(instance_id, target_id) else {
            return Err(ServiceError::InvalidParameter {
                name: action.target_parameter().to_owned(),
                message: format!(
                    "InstanceId {instance_id} and {} {target_id} are not in one \
                     disaster-recovery group.",
                    action.target_parameter()
                ),
            });
        };
        let target = pair
            .pop()
            .map(|(_, m)| m)
            .ok_or_else(|| ServiceError::Internal {
                message: "instance check produced no target".to_owned(),
            })?;
        Ok((group.clone(), target))
    }

    /// Runs a store operation off the async workers, mapping any failure to `InternalError`.
    async fn write<F>(&self, operation: F) -> Result<(), ServiceError>
    where
        F: FnOnce(&dyn Store) -> Result<(), StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let outcome = tokio::task::spawn_blocking(move || operation(store.as_ref())).await;
        let failure = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(join_error) => format!("store task failed: {join_error}"),
        };
        error!(error = %failure, "Failed to store a DR change; nothing was changed");
        // The caller gets the outcome; the file path and SQLite detail stay in the server log.
        Err(ServiceError::Internal {
            message: "The DR state could not be stored, so nothing changed. Try again later; the \
                      server log has the cause."
                .to_owned(),
        })
    }
}

impl DisasterRecoveryBackend for DrController {
    fn downgrade<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        downgrade_instance_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>> {
        Box::pin(self.run(DrAction::Downgrade, ctx, instance_id, downgrade_instance_id))
    }

    fn recover<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        recovery_instance_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>> {
        Box::pin(self.run(DrAction::Recovery, ctx, instance_id, recovery_instance_id))
    }

    fn instance_region(&self, instance_id: &str) -> Option<String> {
        self.registry
            .member(instance_id)
            .map(|m| m.info.region.clone())
    }
}

/// Disconnects, at `rate` devices per second, every device that reached `member` through the
/// global endpoint of `group_id`. MQTT 5.0 devices get DISCONNECT 0x9C (use another server).
///
/// Stops early when the member is recovered meanwhile.
async fn disconnect_paced(member: Arc<Member>, group_id: String, rate: u32) {
    let origin = Origin::Global { group: group_id };
    let list = || member.instance.connections(&origin);
    let keep_going = || !member.has_global_access();
    match disconnect_in_sweeps(rate, list, keep_going).await {
        Paced::Finished(disconnected) => {
            info!(instance = %member.id(), disconnected, "Disconnected devices of downgraded member");
        }
        Paced::Stopped(disconnected) => {
            info!(instance = %member.id(), disconnected, "Member recovered; stopped disconnecting");
        }
    }
}

/// Disconnects, at `rate` devices per second, the devices on the other members of `group`
/// that came through its global endpoint and whose username names the recovered member
/// `target` (`Mode|KeyId|InstanceId`), so that they reconnect and land on `target`. MQTT 5.0
/// devices get DISCONNECT 0x9C (use another server).
///
/// Stops early when `target` is downgraded again or reports itself unhealthy, because the
/// endpoint would then send the devices elsewhere.
async fn rebalance_paced(group: Arc<Group>, target: Arc<Member>, rate: u32) {
    let origin = Origin::Global {
        group: group.id().to_owned(),
    };
    let list = || {
        let others = group.members.iter().filter(|m| m.id() != target.id());
        others
            .flat_map(|member| member.instance.connections(&origin))
            .filter(|handle| named_instance(handle.username()) == Some(target.id()))
            .collect::<Vec<ConnectionHandle>>()
    };
    let keep_going = || target.has_global_access() && target.instance.is_healthy();
    match disconnect_in_sweeps(rate, list, keep_going).await {
        Paced::Finished(disconnected) => info!(
            group = %group.id(),
            instance = %target.id(),
            disconnected,
            "Rebalanced devices back to recovered member"
        ),
        Paced::Stopped(disconnected) => info!(
            group = %group.id(),
            instance = %target.id(),
            disconnected,
            "Recovered member lost access or health; stopped rebalancing"
        ),
    }
}

/// How a paced disconnection ended, with the number of devices it disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paced {
    Finished(usize),
    /// `keep_going` turned false before every listed device was disconnected.
    Stopped(usize),
}

/// Disconnects the devices that `list` returns, at `rate` per second, with DISCONNECT 0x9C for
/// MQTT 5.0 devices, while `keep_going` holds.
///
/// A device handed to a member just before the change that started this can appear after the
/// first listing, so `list` is called again until it returns nothing, at most a few times.
async fn disconnect_in_sweeps(
    rate: u32,
    list: impl Fn() -> Vec<ConnectionHandle>,
    keep_going: impl Fn() -> bool,
) -> Paced {
    const MAX_SWEEPS: usize = 3;
    let (tick, per_tick) = pace(rate);
    let mut disconnected = 0usize;

    for _ in 0..MAX_SWEEPS {
        let handles = list();
        if handles.is_empty() {
            break;
        }
        let mut interval = tokio::time::interval(tick);
        for batch in handles.chunks(per_tick) {
            interval.tick().await;
            if !keep_going() {
                return Paced::Stopped(disconnected);
            }
            for handle in batch {
                handle.disconnect(ReasonCode::USE_ANOTHER_SERVER);
            }
            disconnected += batch.len();
        }
    }
    Paced::Finished(disconnected)
}

/// Splits a rate in devices per second into a tick length and a batch size per tick, with ticks
/// no shorter than 10 ms.
fn pace(rate_per_second: u32) -> (Duration, usize) {
    let rate = rate_per_second.max(1);
    if rate <= 100 {
        (Duration::from_secs(1) / rate, 1)
    } else {
        (Duration::from_millis(10), rate.div_ceil(100) as usize)
    }
}

fn access_label(access: bool) -> String {
    if access {
        "global_access=on".to_owned()
    } else {
        "global_access=off".to_owned()
    }
}

fn principal_label(principal: &Principal) -> String {
    match principal {
        Principal::Root => "root".to_owned(),
        Principal::RamUser(name) => format!("ram-user:{name}"),
    }
}

fn unix_millis() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_splits_rates() {
        assert_eq!(pace(1), (Duration::from_secs(1), 1));
        assert_eq!(pace(0), (Duration::from_secs(1), 1));
        assert_eq!(pace(50), (Duration::from_millis(20), 1));
        assert_eq!(pace(100), (Duration::from_millis(10), 1));
        assert_eq!(pace(1000), (Duration::from_millis(10), 10));
        assert_eq!(pace(1050), (Duration::from_millis(10), 11));
    }
}
