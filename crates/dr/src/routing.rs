//! The routing decision of a global endpoint: which member of a disaster-recovery group takes a
//! device. Pure: no I/O, no clock, no randomness, so every case is tested without sockets.

/// Fallback policy for a device whose username names no member that can take it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// The first member, in the group's configured order, that has access and is healthy.
    #[default]
    FirstInOrder,
    /// Spreads devices over the members that have access and are healthy by rendezvous hashing of
    /// the client id: each device goes to the member with the highest hash of (client id, member
    /// id). A device keeps its member while that member stays eligible, and when a member leaves,
    /// only the devices it held move.
    HashClientId,
}

/// Snapshot of one member that the endpoint uses to route a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberView<'a> {
    pub id: &'a str,
    /// Global-endpoint access: off after `DisasterDowngrade`, on again after `DisasterRecovery`.
    pub global_access: bool,
    pub healthy: bool,
}

impl MemberView<'_> {
    fn is_eligible(&self) -> bool {
        self.global_access && self.healthy
    }
}

/// The outcome of routing one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The member the username names.
    Named(&'a str),
    /// Another member, chosen by the group's fallback policy.
    Fallback(&'a str),
    /// No member can take the device, so the endpoint sends CONNACK "server unavailable".
    Unavailable,
}

/// Returns the instance id an ApsaraMQ username `Mode|KeyId|InstanceId` names, if it has that form.
pub fn named_instance(username: Option<&str>) -> Option<&str> {
    let mut parts = username?.split('|');
    let (_mode, _key, instance) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || instance.is_empty() {
        return None;
    }
    Some(instance)
}

/// Chooses the member that takes a device.
///
/// `members` is in the group's configured order. The named member wins when it is in the group,
/// has access and is healthy; otherwise the fallback policy picks among the eligible members.
pub fn choose_member<'a>(
    members: &[MemberView<'a>],
    named: Option<&str>,
    client_id: &str,
    policy: FallbackPolicy,
) -> Route<'a> {
    if let Some(named) = named
        && let Some(member) = members.iter().find(|m| m.id == named)
        && member.is_eligible()
    {
        return Route::Named(member.id);
    }

    let mut eligible = members.iter().filter(|m| m.is_eligible());
    let chosen = match policy {
        FallbackPolicy::FirstInOrder => eligible.next(),
        FallbackPolicy::HashClientId => {
            eligible.max_by_key(|m| (rendezvous_weight(client_id, m.id), std::cmp::Reverse(m.id)))
        }
    };
    match chosen {
        Some(member) => Route::Fallback(member.id),
        None => Route::Unavailable,
    }
}

/// Returns the weight of a member for a client id: the 64-bit FNV-1a hash of the client id, a
/// separator byte and the member id, passed through the SplitMix64 finalizer.
///
/// FNV-1a is fixed by its definition, unlike `std`'s default hasher, so the choice survives
/// restarts and upgrades. On its own it barely mixes the last bytes, and member ids often differ
/// only there, so the finalizer spreads them.
fn rendezvous_weight(client_id: &str, member_id: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    let bytes = client_id.bytes().chain([0xff]).chain(member_id.bytes());
    let hash = bytes.fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    let mixed = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, global_access: bool, healthy: bool) -> MemberView<'_> {
        MemberView {
            id,
            global_access,
            healthy,
        }
    }

    #[test]
    fn named_instance_parses_three_parts() {
        assert_eq!(
            named_instance(Some("Signature|LTAI1|mqtt-cn-a")),
            Some("mqtt-cn-a")
        );
        assert_eq!(
            named_instance(Some("Token|LTAI1|mqtt-cn-a")),
            Some("mqtt-cn-a")
        );
        assert_eq!(named_instance(Some("plain-user")), None);
        assert_eq!(named_instance(Some("a|b")), None);
        assert_eq!(named_instance(Some("a|b|c|d")), None);
        assert_eq!(named_instance(Some("a|b|")), None);
        assert_eq!(named_instance(None), None);
    }

    #[test]
    fn named_member_with_access_wins() {
        let members = [view("a", true, true), view("b", true, true)];
        let route = choose_member(&members, Some("b"), "c1", FallbackPolicy::FirstInOrder);
        assert_eq!(route, Route::Named("b"));
    }

    #[test]
    fn downgraded_named_member_falls_back_in_order() {
        let members = [
            view("a", false, true),
            view("b", true, true),
            view("c", true, true),
        ];
        let route = choose_member(&members, Some("a"), "c1", FallbackPolicy::FirstInOrder);
        assert_eq!(route, Route::Fallback("b"));
    }

    #[test]
    fn unhealthy_named_member_falls_back() {
        let members = [view("a", true, false), view("b", true, true)];
        let route = choose_member(&members, Some("a"), "c1", FallbackPolicy::FirstInOrder);
        assert_eq!(route, Route::Fallback("b"));
    }

    #[test]
    fn unknown_or_missing_name_falls_back() {
        let members = [view("a", true, true), view("b", true, true)];
        for named in [Some("elsewhere"), None] {
            let route = choose_member(&members, named, "c1", FallbackPolicy::FirstInOrder);
            assert_eq!(route, Route::Fallback("a"), "named {named:?}");
        }
    }

    #[test]
    fn no_eligible_member_is_unavailable() {
        let members = [view("a", false, true), view("b", true, false)];
        for policy in [FallbackPolicy::FirstInOrder, FallbackPolicy::HashClientId] {
            assert_eq!(
                choose_member(&members, Some("a"), "c1", policy),
                Route::Unavailable
            );
        }
        assert_eq!(
            choose_member(&[], None, "c1", FallbackPolicy::FirstInOrder),
            Route::Unavailable
        );
    }

    #[test]
    fn hash_policy_is_deterministic_and_spreads() {
        let members = [
            view("a", true, true),
            view("b", true, true),
            view("c", true, true),
        ];
        let mut counts = std::collections::HashMap::new();
        for n in 0..3000 {
            let client_id = format!("GID_x@@@device-{n}");
            let first = choose_member(&members, None, &client_id, FallbackPolicy::HashClientId);
            let again = choose_member(&members, None, &client_id, FallbackPolicy::HashClientId);
            assert_eq!(first, again);
            let Route::Fallback(id) = first else {
                panic!("unexpected route {first:?}")
            };
            *counts.entry(id).or_insert(0) += 1;
        }
        for id in ["a", "b", "c"] {
            let count = counts.get(id).copied().unwrap_or(0);
            assert!(
                (800..1200).contains(&count),
                "member {id} got {count} of 3000"
            );
        }
    }

    #[test]
    fn hash_policy_moves_only_devices_of_lost_member() {
        let all = [
            view("a", true, true),
            view("b", true, true),
            view("c", true, true),
        ];
        let without_b = [
            view("a", true, true),
            view("b", false, true),
            view("c", true, true),
        ];
        for n in 0..1000 {
            let client_id = format!("dev-{n}");
            let before = choose_member(&all, None, &client_id, FallbackPolicy::HashClientId);
            let after = choose_member(&without_b, None, &client_id, FallbackPolicy::HashClientId);
            if before != Route::Fallback("b") {
                assert_eq!(
                    before, after,
                    "client {client_id} moved although its member stayed"
                );
            }
            assert_ne!(after, Route::Fallback("b"));
        }
    }

    #[test]
    fn rendezvous_weight_is_fixed() {
        // Expected values computed independently with a ten-line Python FNV-1a and SplitMix64. A change here
        // would move devices to other members across an upgrade.
        assert_eq!(rendezvous_weight("", ""), 0x4f2d_b50f_1240_40cd);
        assert_eq!(rendezvous_weight("dev", "a"), 0xe7cd_2fa0_c09b_7088);
        assert_eq!(
            rendezvous_weight("GID_demo@@@dev1", "mqtt-cn-hz01"),
            0x49e3_a7ab_67b1_88c5
        );
    }
}
