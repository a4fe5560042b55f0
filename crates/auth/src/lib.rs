//! The login and naming rules of one Switchyard instance, as ApsaraMQ for MQTT defines them:
//! usernames `Mode|KeyId|InstanceId`, signature passwords, client ids `GroupId@@@DeviceId`,
//! registered Group IDs and parent topics, and the operator's topic access rules. The crate
//! does no I/O and depends on no Switchyard crate but the codec (for topic filter matching), so
//! the broker, the global endpoint and the tests share it.
//!
//! # Layout
//!
//! - [`error`]: [`AuthError`] and [`AuthErrorKind`], which map each rejection to its MQTT
//!   reason code.
//! - `username`: [`parse_username`] and [`LoginMode`].
//! - `signature`: [`signature_password`], used by Signature and DeviceCredential logins.
//! - `client_id`: [`parse_client_id`] and the client id and Group ID limits.
//! - `policy`: [`InstanceAuthPolicy`], [`Identity`], [`TopicAccess`] and the
//!   [`CredentialLookup`] trait through which a token and device credential store plugs in.
//! - `connect`: [`InstanceAuthPolicy::check_connect`], the CONNECT check.
//! - `topic`: [`InstanceAuthPolicy::check_topic`], the PUBLISH and SUBSCRIBE check.
//! - [`access_rule`]: [`AccessRule`], the ordered ALLOW and DENY rules that `check_topic`
//!   evaluates first.
//!
//! Tokens and device credentials do not exist in Switchyard yet, so
//! [`InstanceAuthPolicy::check_connect`] rejects every Token and DeviceCredential login.
//! [`InstanceAuthPolicy::check_connect_with`] takes a [`CredentialLookup`] for when they do.

pub mod access_rule;
pub mod error;

mod client_id;
mod connect;
mod policy;
mod signature;
mod topic;
mod username;

pub use access_rule::{
    AccessRule, AccessRuleError, DenyReason, PermitAction, RuleEffect, SubscribeMatch,
};
pub use client_id::{
    CLIENT_ID_SEPARATOR, ClientId, MAX_CLIENT_ID_LEN, MAX_GROUP_ID_LEN, MIN_GROUP_ID_LEN,
    check_group_id, parse_client_id,
};
pub use error::{AuthError, AuthErrorKind};
pub use policy::{
    ANONYMOUS_PRINCIPAL, CredentialLookup, Identity, InstanceAuthPolicy, TokenKind, TopicAccess,
};
pub use signature::signature_password;
pub use username::{Login, LoginMode, parse_username};
