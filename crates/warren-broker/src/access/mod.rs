//! Who may connect and what they may do: users (with RabbitMQ-format password
//! hashes and tags) and per-vhost permissions.
//!
//! This is only the registry; [`crate::admin`] applies operator changes, writes
//! them to the store and closes the connections they affect. Connections cache
//! their permissions and re-read them when [`Access::generation`] moves, so a
//! change applies to open connections at their next operation.

pub mod password;
pub mod permission;
pub mod required;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use permission::{Perm, Permissions, Resource};
pub use required::Check;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// base64(salt ‖ SHA-256(salt ‖ password)); empty: no password login.
    pub password_hash: String,
    pub tags: Vec<String>,
}

impl User {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// May use the management API at all (RabbitMQ's management tags).
    pub fn is_management(&self) -> bool {
        ["administrator", "monitoring", "policymaker", "management"]
            .iter()
            .any(|t| self.has_tag(t))
    }
}

/// Users and permissions.
#[derive(Debug, Default)]
pub struct Access {
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// (vhost, user) → permissions.
    permissions: RwLock<BTreeMap<(String, String), Arc<Permissions>>>,
    generation: AtomicU64,
}

impl Access {
    /// Bumped by every change to permissions or users.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    /// Add or replace a user; true if it is new.
    pub fn put_user(&self, user: User) -> bool {
        let created = self
            .users
            .write()
            .insert(user.name.clone(), Arc::new(user))
            .is_none();
        self.changed();
        created
    }

    /// Remove a user and its permissions everywhere.
    pub fn remove_user(&self, name: &str) -> Option<Arc<User>> {
        let removed = self.users.write().remove(name);
        if removed.is_some() {
            self.permissions.write().retain(|(_, u), _| u != name);
            self.changed();
        }
        removed
    }

    pub fn permission(&self, vhost: &str, user: &str) -> Option<Arc<Permissions>> {
        self.permissions
            .read()
            .get(&(vhost.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every (vhost, user, permissions), ordered by vhost then user.
    pub fn permissions(&self) -> Vec<(String, String, Arc<Permissions>)> {
        self.permissions
            .read()
            .iter()
            .map(|((v, u), p)| (v.clone(), u.clone(), p.clone()))
            .collect()
    }

    /// Set a user's permissions in a vhost; true if there were none before.
    pub fn set_permission(&self, vhost: &str, user: &str, p: Permissions) -> bool {
        let created = self
            .permissions
            .write()
            .insert((vhost.to_owned(), user.to_owned()), Arc::new(p))
            .is_none();
        self.changed();
        created
    }

    pub fn clear_permission(&self, vhost: &str, user: &str) -> bool {
        let removed = self
            .permissions
            .write()
            .remove(&(vhost.to_owned(), user.to_owned()))
            .is_some();
        if removed {
            self.changed();
        }
        removed
    }

    /// Drop every permission in a vhost (the vhost is being deleted); returns the users.
    pub fn clear_vhost(&self, vhost: &str) -> Vec<String> {
        let mut users = Vec::new();
        self.permissions.write().retain(|(v, u), _| {
            if v == vhost {
                users.push(u.clone());
                false
            } else {
                true
            }
        });
        self.changed();
        users
    }

    /// Check a password login (the loopback rule is the broker's).
    pub fn check_password(&self, user: &str, password: &str) -> Option<Arc<User>> {
        self.user(user)
            .filter(|u| password::verify(&u.password_hash, password))
    }
}

/// Parse RabbitMQ's tag list: "a,b" or "a b" (the HTTP API and rabbitmqctl forms).
pub fn parse_tags(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, pw: &str) -> User {
        User {
            name: name.into(),
            password_hash: password::hash(pw),
            tags: vec![],
        }
    }

    #[test]
    fn users_and_permissions() {
        let a = Access::default();
        assert!(a.put_user(user("bob", "pw")));
        assert!(!a.put_user(user("bob", "pw2")), "replaced, not new");
        assert!(a.check_password("bob", "pw2").is_some());
        assert!(a.check_password("bob", "pw").is_none());
        assert!(a.check_password("nobody", "pw").is_none());
        let g = a.generation();
        assert!(a.set_permission("/", "bob", Permissions::all()));
        assert!(a.generation() > g);
        assert!(a.permission("/", "bob").is_some());
        assert!(a.permission("v", "bob").is_none());
        a.remove_user("bob");
        assert!(
            a.permission("/", "bob").is_none(),
            "permissions go with the user"
        );
    }

    #[test]
    fn clearing_a_vhost_drops_its_permissions_only() {
        let a = Access::default();
        a.set_permission("v", "bob", Permissions::all());
        a.set_permission("w", "bob", Permissions::all());
        assert_eq!(a.clear_vhost("v"), vec!["bob".to_string()]);
        assert!(a.permission("w", "bob").is_some());
    }

    #[test]
    fn tags_parse_both_separators() {
        assert_eq!(
            parse_tags("administrator, monitoring"),
            ["administrator", "monitoring"]
        );
        assert_eq!(parse_tags(""), Vec::<String>::new());
    }
}
