//! Permission checks on the resources a channel method touches (RabbitMQ's
//! configure/write/read model), with the user's permissions cached until the
//! registry changes.

use super::Connection;
use crate::access::permission::resource_name;
use crate::access::{Check, Perm, Resource};
use crate::error::{AmqpError, AmqpResult};

impl Connection {
    /// Refuse with 403 unless the user may `perm` the resource `name`.
    /// The default exchange is checked under its name `amq.default`.
    pub(super) fn permit(&mut self, perm: Perm, kind: Resource, name: &str) -> AmqpResult<()> {
        let generation = self.broker.access.generation();
        if generation != self.perms_generation {
            self.perms = self.broker.access.permission(self.vhost_name(), &self.user);
            self.perms_generation = generation;
        }
        let name = resource_name(kind, name);
        if self.perms.as_ref().is_some_and(|p| p.allows(perm, name)) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "access to {} '{}' in vhost '{}' refused for user '{}'",
            kind.as_str(),
            name,
            self.vhost_name(),
            self.user
        )))
    }

    /// Refuse at the first of `checks` the user may not do.
    pub(super) fn permit_all(&mut self, checks: &[Check]) -> AmqpResult<()> {
        checks
            .iter()
            .try_for_each(|c| self.permit(c.perm, c.kind, &c.name))
    }
}
