//! Operator actions on vhosts, users and permissions — the verbs behind the
//! management API. Each applies the change, writes it to the store (when the
//! broker has one) and closes the connections it leaves without a home, with
//! RabbitMQ's reasons.

use std::sync::Arc;

use crate::access::{password, Permissions, User};
use crate::broker::Broker;
use crate::connection::handle::ConnEvent;
use crate::persist::MetaRecord;
use crate::vhost::{VHost, VHostMeta};

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
}

/// How a user update treats the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordChange {
    /// Hash this password.
    Password(String),
    /// Store this hash as is (RabbitMQ format; empty means no password).
    Hash(String),
    /// Keep the current hash (a new user gets none).
    Keep,
}

impl Broker {
    /// Create a vhost, or update its description and tags; true if it is new.
    pub fn put_vhost(&self, name: &str, meta: VHostMeta) -> bool {
        let mut created = false;
        let vhost = self
            .vhosts
            .entry(name.to_owned())
            .or_insert_with(|| {
                created = true;
                Arc::new(VHost::new(name, self.persist.get().cloned()))
            })
            .clone();
        *vhost.meta.write() = meta;
        self.persist_put(&vhost_record(&vhost));
        if created {
            tracing::info!(vhost = name, "vhost created");
        }
        created
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<_> = self.vhosts.iter().map(|v| v.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Delete a vhost with everything in it; its connections are closed.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        let (_, vhost) = self.vhosts.remove(name).ok_or(AdminError::NotFound)?;
        self.close_connections_where(|_, v| v == name, &format!("vhost '{name}' is down"));
        vhost.destroy();
        for user in self.access.clear_vhost(name) {
            self.persist_delete(&permission_key(name, &user));
        }
        self.persist_delete(&vhost_record(&vhost));
        tracing::info!(vhost = name, "vhost deleted");
        Ok(())
    }

    /// Create or update a user; true if it is new.
    pub fn put_user(
        &self,
        name: &str,
        password: PasswordChange,
        tags: Vec<String>,
    ) -> Result<bool, AdminError> {
        if name.is_empty() {
            return Err(AdminError::BadRequest("user name must not be empty".into()));
        }
        let password_hash = match password {
            PasswordChange::Password(p) => password::hash(&p),
            PasswordChange::Hash(h) if password::is_valid_hash(&h) => h,
            PasswordChange::Hash(_) => {
                return Err(AdminError::BadRequest(
                    "password_hash is not a base64-encoded salted SHA-256 hash".into(),
                ))
            }
            PasswordChange::Keep => self
                .access
                .user(name)
                .map(|u| u.password_hash.clone())
                .unwrap_or_default(),
        };
        let user = User {
            name: name.to_owned(),
            password_hash,
            tags,
        };
        self.persist_put(&user_record(&user));
        let created = self.access.put_user(user);
        if created {
            tracing::info!(user = name, "user created");
        }
        Ok(created)
    }

    /// Delete a user and its permissions; its connections are closed.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        let user = self.access.user(name).ok_or(AdminError::NotFound)?;
        let vhosts: Vec<String> = self
            .access
            .permissions()
            .into_iter()
            .filter(|(_, u, _)| u == name)
            .map(|(v, _, _)| v)
            .collect();
        self.access.remove_user(name);
        for v in vhosts {
            self.persist_delete(&permission_key(&v, name));
        }
        self.persist_delete(&user_record(&user));
        self.close_connections_where(|u, _| u == name, &format!("user '{name}' is deleted"));
        tracing::info!(user = name, "user deleted");
        Ok(())
    }

    /// Set a user's permissions in a vhost; true if it had none there.
    pub fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<bool, AdminError> {
        if self.vhost(vhost).is_none() || self.access.user(user).is_none() {
            return Err(AdminError::BadRequest("vhost_or_user_not_found".into()));
        }
        let p = Permissions::new(configure, write, read).map_err(AdminError::BadRequest)?;
        self.persist_put(&permission_record(vhost, user, &p));
        Ok(self.access.set_permission(vhost, user, p))
    }

    pub fn clear_permissions(&self, vhost: &str, user: &str) -> Result<(), AdminError> {
        if !self.access.clear_permission(vhost, user) {
            return Err(AdminError::NotFound);
        }
        self.persist_delete(&permission_key(vhost, user));
        Ok(())
    }

    /// Resolves once every definition change made so far is on disk (at once
    /// for an in-memory broker); false if the store failed.
    pub async fn definitions_on_disk(&self) -> bool {
        let Some(p) = self.persist.get() else {
            return true;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        p.store.barrier(move |ok| {
            let _ = tx.send(ok);
        });
        rx.await.unwrap_or(false)
    }

    /// The first start's vhost and administrator (RabbitMQ's defaults).
    pub(crate) fn create_defaults(&self) {
        let cfg = &self.config;
        let (vhost, user) = (cfg.default_vhost.clone(), cfg.default_user.clone());
        self.put_vhost(
            &vhost,
            VHostMeta {
                description: "Default virtual host".into(),
                tags: Vec::new(),
            },
        );
        let _ = self.put_user(
            &user,
            PasswordChange::Password(cfg.default_pass.clone()),
            vec!["administrator".into()],
        );
        let _ = self.set_permissions(&vhost, &user, ".*", ".*", ".*");
        self.persist_put(&MetaRecord::Defaults);
    }

    /// Restore from the store (no write back).
    pub(crate) fn restore_user(&self, user: User) {
        self.access.put_user(user);
    }

    fn close_connections_where(&self, f: impl Fn(&str, &str) -> bool, text: &str) {
        for c in self.connections.iter() {
            if let Some(id) = c.identity.get() {
                if f(&id.user, &id.vhost) {
                    c.notify(ConnEvent::ForceClose {
                        code: 320,
                        text: format!("CONNECTION_FORCED - {text}"),
                    });
                }
            }
        }
    }

    fn persist_put(&self, record: &MetaRecord) {
        if let Some(p) = self.persist.get() {
            p.put(record);
        }
    }

    fn persist_delete(&self, record: &MetaRecord) {
        if let Some(p) = self.persist.get() {
            p.delete(record);
        }
    }
}

fn vhost_record(v: &VHost) -> MetaRecord {
    let meta = v.meta.read();
    MetaRecord::Vhost {
        name: v.name.clone(),
        description: meta.description.clone(),
        tags: meta.tags.clone(),
    }
}

fn user_record(u: &User) -> MetaRecord {
    MetaRecord::User {
        name: u.name.clone(),
        password_hash: u.password_hash.clone(),
        hashing_algorithm: password::SHA256.into(),
        tags: u.tags.clone(),
    }
}

pub(crate) fn permission_record(vhost: &str, user: &str, p: &Permissions) -> MetaRecord {
    MetaRecord::Permission {
        vhost: vhost.to_owned(),
        user: user.to_owned(),
        configure: p.configure.source().to_owned(),
        write: p.write.source().to_owned(),
        read: p.read.source().to_owned(),
    }
}

/// A permission record with only its key fields (for deletes).
fn permission_key(vhost: &str, user: &str) -> MetaRecord {
    MetaRecord::Permission {
        vhost: vhost.to_owned(),
        user: user.to_owned(),
        configure: String::new(),
        write: String::new(),
        read: String::new(),
    }
}
