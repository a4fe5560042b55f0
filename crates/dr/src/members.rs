//! Instances as the disaster-recovery layer sees them, and the groups they belong to.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_broker::Instance;

use crate::routing::{FallbackPolicy, MemberView};

/// Edition of an instance, as ApsaraMQ for MQTT sells them. Only `platinum` supports disaster
/// recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    Basic,
    Professional,
    Platinum,
    Serverless,
}

impl Edition {
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Basic => "basic",
            Edition::Professional => "professional",
            Edition::Platinum => "platinum",
            Edition::Serverless => "serverless",
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Edition {
    type Err = String;

    fn from_str(value: &str) -> Result<Edition, String> {
        match value {
            "basic" => Ok(Edition::Basic),
            "professional" => Ok(Edition::Professional),
            "platinum" => Ok(Edition::Platinum),
            "serverless" => Ok(Edition::Serverless),
            other => Err(format!(
                "invalid edition {other:?}: expected basic, professional, platinum or serverless"
            )),
        }
    }
}

/// Static facts about an instance, from the configuration.
#[derive(Clone, Debug)]
pub struct InstanceInfo {
    pub id: String,
    pub account_id: String,
    pub region: String,
    pub edition: Edition,
    /// The per-instance flag the cloud grants by support ticket.
    pub disaster_recovery: bool,
}

impl InstanceInfo {
    /// Reports whether the DR actions apply to this instance.
    pub fn supports_disaster_recovery(&self) -> bool {
        self.edition == Edition::Platinum && self.disaster_recovery
    }
}

/// One instance with its broker and its global-endpoint access flag.
pub struct Member {
    pub info: InstanceInfo,
    pub instance: Arc<Instance>,
    /// The DR group the instance belongs to, if any.
    pub group: Option<String>,
    global_access: AtomicBool,
}

impl Member {
    pub fn new(info: InstanceInfo, instance: Arc<Instance>, group: Option<String>) -> Member {
        Member {
            info,
            instance,
            group,
            global_access: AtomicBool::new(true),
        }
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Reports whether global endpoints may send new devices to this member.
    pub fn has_global_access(&self) -> bool {
        self.global_access.load(Ordering::Acquire)
    }

    /// Sets the access flag. Only the controller calls this, after the store has the new state.
    pub(crate) fn set_global_access(&self, access: bool) {
        self.global_access.store(access, Ordering::Release);
    }
}

/// Settings of one disaster-recovery group and its global endpoint.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub id: String,
    /// Member instance ids; the order is the fallback order.
    pub members: Vec<String>,
    pub fallback: FallbackPolicy,
    /// Time a device has to send its whole CONNECT to the global endpoint.
    pub connect_timeout: Duration,
    /// Largest CONNECT the global endpoint reads, in bytes.
    pub max_connect_bytes: u32,
    /// Devices per second disconnected from a downgraded member, so that the surviving members
    /// are not flooded with reconnections. Also the pace of a rebalance on recovery.
    pub disconnect_rate_per_second: u32,
    /// Whether `DisasterRecovery` of a member disconnects the devices on the other members whose
    /// username names it, so they reconnect through the global endpoint and land on it again.
    pub rebalance_on_recovery: bool,
}

/// A disaster-recovery group: members in fallback order, with their shared access flags.
pub struct Group {
    pub settings: GroupSettings,
    pub members: Vec<Arc<Member>>,
}

impl Group {
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    pub fn contains(&self, instance_id: &str) -> bool {
        self.members.iter().any(|m| m.id() == instance_id)
    }

    pub fn member(&self, instance_id: &str) -> Option<&Arc<Member>> {
        self.members.iter().find(|m| m.id() == instance_id)
    }

    /// Takes a snapshot of the members for one routing decision.
    pub fn views(&self) -> Vec<MemberView<'_>> {
        self.members
            .iter()
            .map(|m| MemberView {
                id: m.id(),
                global_access: m.has_global_access(),
                healthy: m.instance.is_healthy(),
            })
            .collect()
    }
}

/// Every instance of the deployment and every DR group, by id.
#[derive(Default)]
pub struct Registry {
    members: HashMap<String, Arc<Member>>,
    groups: HashMap<String, Arc<Group>>,
}

impl Registry {
    /// Builds the registry. Every group member must be among `members`; the configuration loader
    /// checks that before, so a missing one is skipped here rather than reported twice.
    pub fn new(members: Vec<Arc<Member>>, groups: Vec<GroupSettings>) -> Registry {
        let members: HashMap<String, Arc<Member>> = members
            .into_iter()
            .map(|m| (m.id().to_owned(), m))
            .collect();
        let groups = groups
            .into_iter()
            .map(|settings| {
                let group_members = settings
                    .members
                    .iter()
                    .filter_map(|id| members.get(id).cloned())
                    .collect();
                let group = Group {
                    members: group_members,
                    settings,
                };
                (group.id().to_owned(), Arc::new(group))
            })
            .collect();
        Registry { members, groups }
    }

    pub fn member(&self, instance_id: &str) -> Option<&Arc<Member>> {
        self.members.get(instance_id)
    }

    pub fn group(&self, group_id: &str) -> Option<&Arc<Group>> {
        self.groups.get(group_id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.members.values()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    /// Returns the group that contains both instances, if there is one.
    pub fn shared_group(&self, first: &str, second: &str) -> Option<&Arc<Group>> {
        self.groups
            .values()
            .find(|g| g.contains(first) && g.contains(second))
    }
}
