//! Disaster recovery across Switchyard instances: groups of members, the global endpoint that
//! routes each device to a member, and the controller behind `DisasterDowngrade` and
//! `DisasterRecovery`.
//!
//! # Layout
//!
//! - [`routing`]: the pure routing decision (named member, fallback order or hash, unavailable).
//! - [`members`]: instances as DR members, their access flags, groups and the registry.
//! - [`endpoint`]: the global endpoint's accept loop and hand-off to a member.
//! - [`handover`]: moving a device's offline session to the member it reconnects to.
//! - [`controller`]: the DR actions: checks, durable change, audit and paced disconnection.

pub mod controller;
pub mod endpoint;
pub mod handover;
pub mod members;
pub mod routing;

pub use controller::DrController;
pub use handover::GroupHandover;
pub use members::{Edition, Group, GroupSettings, InstanceInfo, Member, Registry};
pub use routing::{FallbackPolicy, Route, choose_member, named_instance};
