//! Start-up from a store: definitions first (vhosts, users, permissions,
//! exchanges, queues, bindings), then
//! each durable queue's messages in order, marked redelivered when they may
//! have reached a consumer before the stop.

use std::sync::Arc;

use warren_store::{Recovered, Recovery};

use crate::broker::Broker;
use crate::delayed::{Delayed, DELAYED_TYPE};
use crate::exchange::{Dest, Exchange};
use crate::persist::MetaRecord;
use crate::queue::Queue;
use crate::vhost::{stored_kind, VHost};

/// One past the highest queue id in use.
pub(crate) fn next_queue_id(recovered: &Recovered) -> u64 {
    let from_meta = recovered
        .meta
        .iter()
        .filter_map(|(_, v)| match serde_json::from_slice::<MetaRecord>(v) {
            Ok(MetaRecord::Queue { id, .. }) => Some(id),
            Ok(MetaRecord::Exchange { store_id, .. }) => store_id,
            _ => None,
        })
        .max();
    let from_messages = recovered.queues_with_messages.iter().copied().max();
    from_meta.max(from_messages).map_or(1, |m| m + 1)
}

/// What recovery leaves for after the store starts.
pub(crate) struct Restored {
    pub queues: Vec<Arc<Queue>>,
    /// `x-delayed-message` exchanges, whose timers start with the broker.
    pub delayed: Vec<(Arc<VHost>, Arc<Exchange>)>,
    /// Ids with stored messages but no queue definition (a delete cut short by a crash).
    pub orphans: Vec<u64>,
    /// Definitions left behind by a vhost or user delete cut short by a crash.
    pub stale: Vec<MetaRecord>,
    /// The store has had its default vhost and user created (at its first start).
    pub defaults_created: bool,
}

pub(crate) fn restore(broker: &Arc<Broker>, recovery: &Recovery) -> Result<Restored, String> {
    let recovered = &recovery.recovered;
    let mut records = Vec::with_capacity(recovered.meta.len());
    for (key, value) in &recovered.meta {
        let r: MetaRecord = serde_json::from_slice(value).map_err(|e| {
            format!(
                "a stored definition ({}) cannot be read: {e}",
                String::from_utf8_lossy(key)
            )
        })?;
        records.push(r);
    }
    let defaults_created = records.iter().any(|r| matches!(r, MetaRecord::Defaults));
    let mut stale = Vec::new();
    // Vhosts and users, then permissions (which need both).
    for r in &records {
        match r {
            MetaRecord::Vhost {
                name,
                description,
                tags,
            } => {
                *broker.vhost_or_create(name).meta.write() = crate::vhost::VHostMeta {
                    description: description.clone(),
                    tags: tags.clone(),
                };
            }
            MetaRecord::User {
                name,
                password_hash,
                tags,
                ..
            } => broker.restore_user(crate::access::User {
                name: name.clone(),
                password_hash: password_hash.clone(),
                tags: tags.clone(),
            }),
            _ => {}
        }
    }
    for r in &records {
        if let MetaRecord::Permission {
            vhost,
            user,
            configure,
            write,
            read,
        } = r
        {
            if broker.vhost(vhost).is_none() || broker.access.user(user).is_none() {
                stale.push(r.clone());
                continue;
            }
            let p = crate::access::Permissions::new(configure, write, read).map_err(|e| {
                format!("stored permissions of user '{user}' in vhost '{vhost}': {e}")
            })?;
            broker.access.set_permission(vhost, user, p);
        }
    }
    // A store from before vhosts were recorded has none: its vhosts are the
    // ones its definitions name. Otherwise a definition in a vhost that is no
    // longer there is what a crash left of deleting it.
    let vhost_of = |r: &MetaRecord| match r {
        MetaRecord::Exchange { vhost, .. }
        | MetaRecord::Queue { vhost, .. }
        | MetaRecord::Binding { vhost, .. } => Some(vhost.clone()),
        _ => None,
    };
    let records: Vec<MetaRecord> = records
        .into_iter()
        .filter(|r| match vhost_of(r) {
            Some(v) if defaults_created && broker.vhost(&v).is_none() => {
                stale.push(r.clone());
                false
            }
            _ => true,
        })
        .collect();
    let (mut exchanges, mut queues, mut bindings) = (0, 0, 0);
    let mut delayed = Vec::new();
    let mut delayed_ids = std::collections::HashMap::new();
    // Exchanges, then queues, then bindings (which need both ends).
    for r in &records {
        if let MetaRecord::Exchange {
            vhost,
            name,
            exchange_type,
            auto_delete,
            internal,
            arguments,
            store_id,
        } = r
        {
            let kind = stored_kind(exchange_type, arguments).ok_or_else(|| {
                format!("stored exchange '{name}' has unknown type '{exchange_type}'")
            })?;
            let mut x = Exchange::new(
                name.clone(),
                kind,
                true,
                *auto_delete,
                *internal,
                arguments.clone(),
            );
            if exchange_type == DELAYED_TYPE {
                x = x.with_delay(Delayed::new(*store_id));
            }
            let v = broker.vhost_or_create(vhost);
            let x = v.restore_exchange(x);
            if let Some(id) = store_id.filter(|_| x.delayed.is_some()) {
                delayed_ids.insert(id, x.clone());
            }
            if x.delayed.is_some() {
                delayed.push((v, x));
            }
            exchanges += 1;
        }
    }
    let mut by_id = std::collections::HashMap::new();
    for r in &records {
        if let MetaRecord::Queue {
            vhost,
            name,
            id,
            auto_delete,
            arguments,
        } = r
        {
            let q = broker.vhost_or_create(vhost).restore_queue(
                name,
                *id,
                *auto_delete,
                arguments.clone(),
            )?;
            if q.args.queue_type == crate::queue::QueueType::Stream {
                let dir = broker
                    .config
                    .streams_dir
                    .as_ref()
                    .map(|d| d.join(id.to_string()));
                let what = format!("queue '{name}' in vhost '{vhost}'");
                let stream = crate::vhost::open_stream(dir, &q.args, &what).map_err(|e| e.text)?;
                q.attach_stream(stream);
            }
            by_id.insert(*id, q);
            queues += 1;
        }
    }
    for r in &records {
        if let MetaRecord::Binding {
            vhost,
            source,
            destination,
            destination_is_queue,
            routing_key,
            arguments,
        } = r
        {
            let dest = if *destination_is_queue {
                Dest::Queue(destination.as_str().into())
            } else {
                Dest::Exchange(destination.as_str().into())
            };
            broker
                .vhost_or_create(vhost)
                .restore_binding(source, dest, routing_key, arguments);
            bindings += 1;
        }
    }
    let mut messages = 0u64;
    let mut orphans = Vec::new();
    for id in &recovered.queues_with_messages {
        if let Some(x) = delayed_ids.get(id) {
            messages += restore_delayed(recovery, *id, x)?;
            continue;
        }
        let Some(q) = by_id.get(id) else {
            orphans.push(*id);
            continue;
        };
        let upto = recovered.delivered.get(id).copied();
        let mut failure = None;
        recovery
            .scan_queue(*id, &mut |seq, record| {
                if failure.is_some() {
                    return;
                }
                let redelivered = upto.is_some_and(|u| seq <= u);
                match q.restore(seq, record, redelivered) {
                    Ok(()) => messages += 1,
                    Err(e) => failure = Some(e),
                }
            })
            .map_err(|e| e.to_string())?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    tracing::info!(
        exchanges,
        queues,
        bindings,
        messages,
        "recovered durable state"
    );
    Ok(Restored {
        queues: by_id.into_values().collect(),
        delayed,
        orphans,
        stale,
        defaults_created,
    })
}

/// Read back the messages a delayed exchange held; returns how many.
fn restore_delayed(recovery: &Recovery, id: u64, x: &Exchange) -> Result<u64, String> {
    let Some(d) = &x.delayed else { return Ok(0) };
    let mut schedule = d.schedule.lock();
    let (mut restored, mut failure) = (0, None);
    let mut last = None;
    recovery
        .scan_queue(
            id,
            &mut |seq, record| match crate::queue::message_from_record(record, &mut last) {
                Some(m) => {
                    schedule.restore(seq, Arc::new(m));
                    restored += 1;
                }
                None => {
                    failure = Some(format!(
                        "a message held by delayed exchange '{}' has a malformed content header",
                        x.name
                    ))
                }
            },
        )
        .map_err(|e| e.to_string())?;
    match failure {
        Some(e) => Err(e),
        None => Ok(restored),
    }
}
