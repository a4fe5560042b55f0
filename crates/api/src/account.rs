//! Accounts, their AccessKey pairs and RAM users, and the verified caller of a request.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::server::ConfigError;

/// An AccessKey pair. `Debug` prints the id and hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Effect of a RAM policy statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One statement of a RAM policy.
///
/// `actions` are RAM action names such as `mq:DisasterDowngrade`, `mq:*` or `*`, matched without
/// regard to ASCII case. `resources` are resource names such as `acs:mq:*:*:mqtt-cn-hz01` or
/// `*`, matched case-sensitively. In both, `*` matches any run of characters, `:` included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// A RAM user of an account: its own AccessKey pairs and the statements of its policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamUser {
    pub name: String,
    pub access_keys: Vec<AccessKey>,
    pub policies: Vec<Statement>,
}

/// An account. Requests signed with its root `access_keys` may call every action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub access_keys: Vec<AccessKey>,
    pub ram_users: Vec<RamUser>,
}

/// The signer of a request: the account itself or one of its RAM users, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Root,
    RamUser(String),
}

/// The verified caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub account_id: String,
    pub access_key_id: String,
    pub principal: Principal,
}

/// Secret, caller and policies stored for one AccessKey id.
pub(crate) struct KeyEntry {
    pub(crate) secret: String,
    pub(crate) caller: Caller,
    /// Statements of the RAM user's policies. Empty, and never consulted, for root keys.
    pub(crate) policies: Arc<[Statement]>,
}

/// Index from AccessKey id to its secret and caller.
pub(crate) struct KeyStore {
    keys: HashMap<String, KeyEntry>,
}

impl KeyStore {
    /// Builds the index, rejecting empty ids or secrets and AccessKey ids used twice anywhere.
    pub(crate) fn new(accounts: Vec<Account>) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        let mut account_ids = HashSet::new();
        for account in accounts {
            if account.id.is_empty() {
                return Err(ConfigError::EmptyAccountId);
            }
            if !account_ids.insert(account.id.clone()) {
                return Err(ConfigError::DuplicateAccount { id: account.id });
            }
            let no_policies: Arc<[Statement]> = Arc::from(Vec::new());
            for key in account.access_keys {
                let caller = Caller {
                    account_id: account.id.clone(),
                    access_key_id: key.id.clone(),
                    principal: Principal::Root,
                };
                insert_key(&mut keys, &account.id, key, caller, no_policies.clone())?;
            }
            for user in account.ram_users {
                if user.name.is_empty() {
                    return Err(ConfigError::EmptyRamUserName {
                        account_id: account.id.clone(),
                    });
                }
                let policies: Arc<[Statement]> = Arc::from(user.policies);
                for key in user.access_keys {
                    let caller = Caller {
                        account_id: account.id.clone(),
                        access_key_id: key.id.clone(),
                        principal: Principal::RamUser(user.name.clone()),
                    };
                    insert_key(&mut keys, &account.id, key, caller, policies.clone())?;
                }
            }
        }
        Ok(Self { keys })
    }

    pub(crate) fn get(&self, access_key_id: &str) -> Option<&KeyEntry> {
        self.keys.get(access_key_id)
    }
}

fn insert_key(
    keys: &mut HashMap<String, KeyEntry>,
    account_id: &str,
    key: AccessKey,
    caller: Caller,
    policies: Arc<[Statement]>,
) -> Result<(), ConfigError> {
    if key.id.is_empty() {
        return Err(ConfigError::EmptyAccessKeyId {
            account_id: account_id.to_owned(),
        });
    }
    if key.secret.is_empty() {
        return Err(ConfigError::EmptyAccessKeySecret {
            access_key_id: key.id,
        });
    }
    if keys.contains_key(&key.id) {
        return Err(ConfigError::DuplicateAccessKey { id: key.id });
    }
    let entry = KeyEntry {
        secret: key.secret,
        caller,
        policies,
    };
    keys.insert(key.id, entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> AccessKey {
        AccessKey {
            id: id.to_owned(),
            secret: format!("{id}-secret"),
        }
    }

    fn account(id: &str, root: &[&str], users: Vec<RamUser>) -> Account {
        Account {
            id: id.to_owned(),
            access_keys: root.iter().map(|k| key(k)).collect(),
            ram_users: users,
        }
    }

    #[test]
    fn key_store_resolves_root_and_ram_keys() {
        let user = RamUser {
            name: "alice".to_owned(),
            access_keys: vec![key("LTAIalice")],
            policies: Vec::new(),
        };
        let store = KeyStore::new(vec![account("100", &["LTAIroot"], vec![user])]);
        let store = match store {
            Ok(store) => store,
            Err(error) => panic!("key store rejected a valid account: {error}"),
        };

        let root = store.get("LTAIroot").map(|e| e.caller.clone());
        assert_eq!(
            root,
            Some(Caller {
                account_id: "100".to_owned(),
                access_key_id: "LTAIroot".to_owned(),
                principal: Principal::Root,
            })
        );
        let alice = store.get("LTAIalice").map(|e| e.caller.principal.clone());
        assert_eq!(alice, Some(Principal::RamUser("alice".to_owned())));
        assert_eq!(
            store.get("LTAIalice").map(|e| e.secret.as_str()),
            Some("LTAIalice-secret")
        );
        assert!(store.get("LTAIother").is_none());
    }

    #[test]
    fn key_store_rejects_duplicate_key_ids() {
        let result = KeyStore::new(vec![
            account("100", &["LTAIsame"], Vec::new()),
            account("200", &["LTAIsame"], Vec::new()),
        ]);
        assert!(matches!(
            result,
            Err(ConfigError::DuplicateAccessKey { ref id }) if id == "LTAIsame"
        ));
    }

    #[test]
    fn key_store_rejects_empty_secret() {
        let mut bad = account("100", &[], Vec::new());
        bad.access_keys.push(AccessKey {
            id: "LTAIempty".to_owned(),
            secret: String::new(),
        });
        let result = KeyStore::new(vec![bad]);
        assert!(matches!(
            result,
            Err(ConfigError::EmptyAccessKeySecret { .. })
        ));
    }

    #[test]
    fn access_key_debug_hides_secret() {
        let printed = format!("{:?}", key("LTAIshown"));
        assert!(printed.contains("LTAIshown"));
        assert!(!printed.contains("LTAIshown-secret"));
    }
}
