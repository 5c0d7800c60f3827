//! Definitions in RabbitMQ's JSON format (`GET/POST /api/definitions`,
//! `load_definitions`): users, vhosts, permissions, queues, exchanges and
//! bindings, so a RabbitMQ export loads into Warren and back.
//!
//! Import follows RabbitMQ: what exists already and matches is left alone,
//! what exists with other properties is skipped with a warning, everything
//! else is created. Users come first, then vhosts, permissions, exchanges,
//! queues and bindings.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

use crate::access::{parse_tags, password};
use crate::admin::PasswordChange;
use crate::broker::Broker;
use crate::exchange::Dest;
use crate::vhost::{ExchangeDecl, QueueDecl, VHostMeta};

/// A connection id no client has (ids start at 1): operator declarations.
pub const OPERATOR: u64 = 0;

/// Deepest JSON nesting turned into nested field tables.
const MAX_DEPTH: usize = 64;

/// Everything, or one vhost's queues, exchanges and bindings.
pub fn export(broker: &Broker, only_vhost: Option<&str>) -> Value {
    let version = &broker.config.server_version;
    let vhosts: Vec<_> = broker
        .vhosts()
        .into_iter()
        .filter(|v| only_vhost.is_none_or(|o| o == v.name))
        .collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in &vhosts {
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in &xs {
            if x.is_default() || x.name.starts_with("amq.") {
                continue;
            }
            exchanges.push(json!({
                "name": x.name, "vhost": v.name, "type": x.type_name(),
                "durable": x.durable, "auto_delete": x.auto_delete,
                "internal": x.internal, "arguments": table_to_json(&x.arguments),
            }));
        }
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs.iter().filter(|q| q.exclusive_owner.is_none()) {
            queues.push(json!({
                "name": q.name, "vhost": v.name, "durable": q.durable,
                "auto_delete": q.auto_delete, "arguments": table_to_json(&q.arguments),
            }));
        }
        for x in &xs {
            if x.is_default() {
                continue;
            }
            for (dest, key, args) in x.bindings.read().bindings() {
                let (destination, kind) = match &dest {
                    Dest::Queue(q) => (q.to_string(), "queue"),
                    Dest::Exchange(e) => (e.to_string(), "exchange"),
                };
                if kind == "queue"
                    && v.queue(&destination)
                        .is_some_and(|q| q.exclusive_owner.is_some())
                {
                    continue;
                }
                bindings.push(json!({
                    "source": x.name, "vhost": v.name, "destination": destination,
                    "destination_type": kind, "routing_key": key,
                    "arguments": table_to_json(&args),
                }));
            }
        }
    }
    if only_vhost.is_some() {
        // A vhost's export does not repeat the vhost in each entry.
        for item in queues.iter_mut().chain(&mut exchanges).chain(&mut bindings) {
            if let Some(m) = item.as_object_mut() {
                m.remove("vhost");
            }
        }
        return json!({
            "rabbit_version": version, "rabbitmq_version": version,
            "product_name": broker.config.server_product, "product_version": version,
            "policies": [], "queues": queues, "exchanges": exchanges, "bindings": bindings,
        });
    }
    let users: Vec<Value> = broker
        .access
        .users()
        .iter()
        .map(|u| {
            json!({
                "name": u.name, "password_hash": u.password_hash,
                "hashing_algorithm": password::SHA256, "tags": u.tags, "limits": {},
            })
        })
        .collect();
    let vhost_list: Vec<Value> = vhosts.iter().map(|v| json!({ "name": v.name })).collect();
    let permissions: Vec<Value> = broker
        .access
        .permissions()
        .iter()
        .map(|(v, u, p)| {
            json!({
                "user": u, "vhost": v, "configure": p.configure.source(),
                "write": p.write.source(), "read": p.read.source(),
            })
        })
        .collect();
    json!({
        "rabbit_version": version, "rabbitmq_version": version,
        "product_name": broker.config.server_product, "product_version": version,
        "users": users, "vhosts": vhost_list, "permissions": permissions,
        "topic_permissions": [], "parameters": [], "global_parameters": [], "policies": [],
        "queues": queues, "exchanges": exchanges, "bindings": bindings,
    })
}

/// Load definitions. With `into_vhost`, every queue, exchange and binding goes
/// to that vhost and users, vhosts and permissions are ignored (RabbitMQ's
/// per-vhost import). Stops at the first entry that cannot be applied.
pub fn import(broker: &Broker, defs: &Value, into_vhost: Option<&str>) -> Result<(), String> {
    let defs = defs
        .as_object()
        .ok_or("definitions must be a JSON object")?;
    let list = |key: &str| -> Vec<&Map<String, Value>> {
        defs.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default()
    };
    if into_vhost.is_none() {
        for u in list("users") {
            let name = text(u, "name")?;
            let password = match (u.get("password_hash"), u.get("password")) {
                (Some(Value::String(h)), _) => PasswordChange::Hash(h.clone()),
                (_, Some(Value::String(p))) => PasswordChange::Password(p.clone()),
                _ => PasswordChange::Keep,
            };
            if let Some(alg) = u.get("hashing_algorithm").and_then(Value::as_str) {
                if alg != password::SHA256 {
                    return Err(format!(
                        "user '{name}': unsupported hashing_algorithm '{alg}' (Warren stores {})",
                        password::SHA256
                    ));
                }
            }
            broker
                .put_user(name, password, tags(u.get("tags")))
                .map_err(|e| format!("user '{name}': {e}"))?;
        }
        for v in list("vhosts") {
            let name = text(v, "name")?;
            crate::names::check_short("vhost name", name)?;
            let meta = v.get("metadata").and_then(Value::as_object).unwrap_or(v);
            if broker.vhost(name).is_none() {
                broker.put_vhost(
                    name,
                    VHostMeta {
                        description: meta
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        tags: tags(meta.get("tags")),
                    },
                );
            }
        }
        for p in list("permissions") {
            let (user, vhost) = (text(p, "user")?, text(p, "vhost")?);
            broker
                .set_permissions(
                    vhost,
                    user,
                    text(p, "configure")?,
                    text(p, "write")?,
                    text(p, "read")?,
                )
                .map_err(|e| format!("permissions of '{user}' in vhost '{vhost}': {e}"))?;
        }
    }
    let vhost_of = |item: &Map<String, Value>| -> Result<Arc<crate::vhost::VHost>, String> {
        let name = match into_vhost {
            Some(v) => v,
            None => text(item, "vhost")?,
        };
        broker
            .vhost(name)
            .ok_or_else(|| format!("vhost '{name}' does not exist"))
    };
    for x in list("exchanges") {
        let vhost = vhost_of(x)?;
        crate::names::check_short("exchange name", text(x, "name")?)?;
        let decl = ExchangeDecl {
            name: text(x, "name")?.to_owned(),
            kind: x
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("direct")
                .to_owned(),
            passive: false,
            durable: flag(x, "durable", true),
            auto_delete: flag(x, "auto_delete", false),
            internal: flag(x, "internal", false),
            arguments: json_to_table(x.get("arguments"))?,
        };
        if let Err(e) = vhost.declare_exchange(&decl) {
            skip_or_fail("exchange", &decl.name, &vhost.name, e)?;
        }
    }
    for q in list("queues") {
        let vhost = vhost_of(q)?;
        crate::names::check_short("queue name", text(q, "name")?)?;
        let decl = QueueDecl {
            name: text(q, "name")?.to_owned(),
            passive: false,
            durable: flag(q, "durable", true),
            exclusive: false,
            auto_delete: flag(q, "auto_delete", false),
            arguments: json_to_table(q.get("arguments"))?,
            server_named: false,
        };
        if let Err(e) = vhost.declare_queue(&decl, OPERATOR) {
            skip_or_fail("queue", &decl.name, &vhost.name, e)?;
        }
    }
    for b in list("bindings") {
        let vhost = vhost_of(b)?;
        let destination = text(b, "destination")?;
        let dest = match b.get("destination_type").and_then(Value::as_str) {
            Some("exchange") => Dest::Exchange(destination.into()),
            _ => Dest::Queue(destination.into()),
        };
        let key = b.get("routing_key").and_then(Value::as_str).unwrap_or("");
        crate::names::check_short("routing key", key)?;
        let args = json_to_table(b.get("arguments"))?;
        vhost
            .bind(text(b, "source")?, dest, key, &args, OPERATOR)
            .map_err(|e| format!("binding in vhost '{}': {}", vhost.name, e.text))?;
    }
    Ok(())
}

/// An existing entity with other properties is left as it is (RabbitMQ logs
/// and goes on); any other failure stops the import.
fn skip_or_fail(
    kind: &str,
    name: &str,
    vhost: &str,
    e: crate::error::AmqpError,
) -> Result<(), String> {
    if e.code.0 == 406 {
        tracing::warn!("definitions: {kind} '{name}' in vhost '{vhost}' exists with other properties; left as it is ({})", e.text);
        return Ok(());
    }
    Err(format!("{kind} '{name}' in vhost '{vhost}': {}", e.text))
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("an entry lacks the text field '{key}'"))
}

fn flag(m: &Map<String, Value>, key: &str, default: bool) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// Tags as RabbitMQ accepts them in JSON: "a,b" or ["a", "b"].
pub fn tags(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => parse_tags(s),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .flat_map(parse_tags)
            .collect(),
        _ => Vec::new(),
    }
}

/// A field table as plain JSON (as RabbitMQ's HTTP API shows arguments).
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.as_str().to_owned(), value_to_json(v, 0));
    }
    Value::Object(m)
}

/// Tables are depth-checked on the way in (by the codec and by
/// [`json_to_table`]); the limit here only keeps this function total.
fn value_to_json(v: &AMQPValue, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(a) => Value::Array(
            a.as_slice()
                .iter()
                .map(|x| value_to_json(x, depth + 1))
                .collect(),
        ),
        AMQPValue::FieldTable(t) => {
            let mut m = Map::new();
            for (k, x) in t.inner() {
                m.insert(k.as_str().to_owned(), value_to_json(x, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// JSON arguments as a field table, typed as RabbitMQ types them: integers
/// as signed 64-bit, other numbers as doubles, text as long strings.
pub fn json_to_table(v: Option<&Value>) -> Result<FieldTable, String> {
    match v {
        None | Some(Value::Null) => Ok(FieldTable::default()),
        Some(Value::Object(m)) => object_to_table(m, 0),
        Some(_) => Err("arguments must be a JSON object".into()),
    }
}

fn object_to_table(m: &Map<String, Value>, depth: usize) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    for (k, v) in m {
        let key = ShortString::try_new(k.clone())
            .map_err(|_| format!("argument name '{k}' is longer than 255 bytes"))?;
        t.insert(key, json_to_value(v, depth + 1)?);
    }
    Ok(t)
}

fn json_to_value(v: &Value, depth: usize) -> Result<AMQPValue, String> {
    if depth > MAX_DEPTH {
        return Err(format!("arguments nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for x in a {
                arr.push(json_to_value(x, depth + 1)?);
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(m) => AMQPValue::FieldTable(object_to_table(m, depth)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_through_json() {
        let v = json!({"x-max-length": 10, "x-dead-letter-exchange": "dlx", "f": 1.5,
                       "nested": {"a": [1, "b", true]}});
        let t = json_to_table(Some(&v)).unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(table_to_json(&t), v);
    }

    #[test]
    fn deep_json_is_refused_not_overflowed() {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!({ "a": v });
        }
        assert!(json_to_table(Some(&v)).is_err());
    }

    #[test]
    fn export_then_import_recreates_definitions() {
        let a = Broker::new(crate::Config::default());
        let defs = json!({
            "users": [{"name": "u", "password_hash": "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV",
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]}],
            "vhosts": [{"name": "v"}],
            "permissions": [{"user": "u", "vhost": "v", "configure": ".*", "write": ".*", "read": "^r"}],
            "exchanges": [{"name": "x", "vhost": "v", "type": "topic", "durable": true,
                           "auto_delete": false, "internal": false, "arguments": {}}],
            "queues": [{"name": "q", "vhost": "v", "durable": true, "auto_delete": false,
                        "arguments": {"x-max-length": 5}}],
            "bindings": [{"source": "x", "vhost": "v", "destination": "q",
                          "destination_type": "queue", "routing_key": "a.*", "arguments": {}}],
        });
        import(&a, &defs, None).unwrap();
        assert!(a.access.check_password("u", "secret").is_some());
        let out = export(&a, None);
        let b = Broker::new(crate::Config::default());
        import(&b, &out, None).unwrap();
        let again = export(&b, None);
        for key in ["vhosts", "permissions", "queues", "exchanges", "bindings"] {
            assert_eq!(out[key], again[key], "{key}");
        }
        assert_eq!(out["queues"][0]["arguments"], json!({"x-max-length": 5}));
        // Importing again changes nothing and does not fail.
        import(&b, &out, None).unwrap();
    }
}
