//! [`BindingTable`]: the bindings of one exchange, with binding identity kept in one place and
//! routing delegated to a kind-specific index.

use std::hash::Hash;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::direct::DirectIndex;
use crate::fanout::FanoutIndex;
use crate::headers::{self, HeadersMatcher};
use crate::indexed::IndexedMap;
use crate::topic::TopicTrie;
use crate::{BindingError, ExchangeKind};

/// All bindings of one exchange, indexed for routing.
///
/// `D` is the destination (the broker's queue or exchange identifier). As in RabbitMQ a
/// binding's identity is the triple (destination, routing key, arguments), so the same
/// destination and key with different arguments are two bindings, each unbound separately.
/// Routing does no regex work and allocates nothing beyond what it pushes onto `out`.
#[derive(Debug, Clone)]
pub struct BindingTable<D> {
    kind: ExchangeKind,
    /// Identity store: every binding, grouped by destination. Headers routing walks this
    /// directly (one matcher per binding); the other kinds keep a derived index below.
    by_dest: IndexedMap<D, Vec<Binding>>,
    len: usize,
    index: Index<D>,
}

#[derive(Debug, Clone)]
struct Binding {
    routing_key: String,
    args: FieldTable,
    /// Compiled arguments; present only in headers exchanges.
    matcher: Option<HeadersMatcher>,
}

#[derive(Debug, Clone)]
enum Index<D> {
    Direct(DirectIndex<D>),
    Fanout(FanoutIndex<D>),
    Topic(TopicTrie<D>),
    /// Headers routing evaluates each binding's matcher from `by_dest`.
    Headers,
}

impl<D: Clone + Eq + Hash> Index<D> {
    fn add(&mut self, routing_key: &str, dest: &D) {
        match self {
            Index::Direct(ix) => ix.add(routing_key, dest),
            Index::Fanout(ix) => ix.add(dest),
            Index::Topic(ix) => ix.add(routing_key, dest),
            Index::Headers => {}
        }
    }

    fn remove(&mut self, routing_key: &str, dest: &D) {
        match self {
            Index::Direct(ix) => ix.remove(routing_key, dest),
            Index::Fanout(ix) => ix.remove(dest),
            Index::Topic(ix) => ix.remove(routing_key, dest),
            Index::Headers => {}
        }
    }
}

impl<D: Clone + Eq + Hash> BindingTable<D> {
    /// An empty table for an exchange of type `kind`.
    pub fn new(kind: ExchangeKind) -> Self {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(DirectIndex::default()),
            ExchangeKind::Fanout => Index::Fanout(FanoutIndex::default()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::default()),
            ExchangeKind::Headers => Index::Headers,
        };
        BindingTable {
            kind,
            by_dest: IndexedMap::default(),
            len: 0,
            index,
        }
    }

    /// The exchange type this table routes for.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Validates binding arguments without binding, as RabbitMQ's `validate_binding` does
    /// before `queue.bind`/`exchange.bind` take effect. Only headers exchanges inspect
    /// arguments (`x-match` must be a string among `all`, `any`, `all-with-x`, `any-with-x`).
    pub fn validate(kind: ExchangeKind, args: &FieldTable) -> Result<(), BindingError> {
        match kind {
            ExchangeKind::Headers => headers::validate(args),
            ExchangeKind::Direct | ExchangeKind::Fanout | ExchangeKind::Topic => Ok(()),
        }
    }

    /// Adds a binding. Returns `Ok(true)` if it was new and `Ok(false)` if an identical
    /// binding (same destination, routing key and arguments) already existed, which makes
    /// re-binding idempotent as AMQP requires.
    pub fn bind(
        &mut self,
        dest: D,
        routing_key: &str,
        args: &FieldTable,
    ) -> Result<bool, BindingError> {
        Self::validate(self.kind, args)?;
        if self.position(&dest, routing_key, args).is_some() {
            return Ok(false);
        }
        let binding = Binding {
            routing_key: routing_key.to_owned(),
            args: args.clone(),
            matcher: (self.kind == ExchangeKind::Headers).then(|| HeadersMatcher::compile(args)),
        };
        self.index.add(routing_key, &dest);
        self.by_dest
            .upsert(&dest, Vec::new, |list| list.push(binding));
        self.len += 1;
        Ok(true)
    }

    /// Removes one binding; returns whether it existed. Removing a missing binding is a no-op.
    pub fn unbind(&mut self, dest: &D, routing_key: &str, args: &FieldTable) -> bool {
        let Some(pos) = self.position(dest, routing_key, args) else {
            return false;
        };
        let Some(list) = self.by_dest.get_mut(dest) else {
            return false;
        };
        if pos >= list.len() {
            return false;
        }
        let removed = list.remove(pos);
        if list.is_empty() {
            self.by_dest.remove(dest);
        }
        self.index.remove(&removed.routing_key, dest);
        self.len = self.len.saturating_sub(1);
        true
    }

    /// Removes every binding to `dest` (its queue or exchange was deleted); returns how many
    /// were removed.
    pub fn unbind_all(&mut self, dest: &D) -> usize {
        let Some(list) = self.by_dest.remove(dest) else {
            return 0;
        };
        for binding in &list {
            self.index.remove(&binding.routing_key, dest);
        }
        self.len = self.len.saturating_sub(list.len());
        list.len()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the exchange has no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any binding targets `dest`.
    pub fn has_destination(&self, dest: &D) -> bool {
        self.by_dest.contains_key(dest)
    }

    /// All bindings as `(destination, routing key, arguments)`, for listing and persistence.
    /// Bindings of one destination are adjacent; the order is otherwise unspecified.
    pub fn bindings(&self) -> Vec<(D, String, FieldTable)> {
        self.by_dest
            .iter()
            .flat_map(|(dest, list)| {
                list.iter()
                    .map(move |b| (dest.clone(), b.routing_key.clone(), b.args.clone()))
            })
            .collect()
    }

    /// Appends to `out` every destination this message routes to, each at most once even if
    /// several bindings match. Only what this call pushes is deduplicated: `out` may already
    /// hold destinations from another exchange, and merging those is the caller's job.
    /// `headers` is the message's headers table, if any (headers exchanges treat `None` as an
    /// empty table); the routing key is ignored by fanout and headers exchanges.
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        match &self.index {
            Index::Direct(ix) => ix.route(routing_key, out),
            Index::Fanout(ix) => ix.route(out),
            Index::Topic(ix) => ix.route(routing_key, out),
            Index::Headers => {
                // One entry per destination, so pushing each matching entry once is enough.
                for (dest, list) in self.by_dest.iter() {
                    let hit = list
                        .iter()
                        .any(|b| b.matcher.as_ref().is_some_and(|m| m.matches(headers)));
                    if hit {
                        out.push(dest.clone());
                    }
                }
            }
        }
    }

    /// Position of the identical binding within `dest`'s list.
    fn position(&self, dest: &D, routing_key: &str, args: &FieldTable) -> Option<usize> {
        let list = self.by_dest.get(dest)?;
        list.iter()
            .position(|b| b.routing_key == routing_key && same_table(&b.args, args, 0))
    }
}

/// Nesting depth past which argument tables are considered different (see `same_value`).
const MAX_DEPTH: usize = 64;

/// Binding-identity equality of argument tables: exact structure and types, with floats
/// compared by bit pattern so that a NaN argument still identifies its own binding (derived
/// `PartialEq` would make such a binding impossible to unbind).
fn same_table(a: &FieldTable, b: &FieldTable, depth: usize) -> bool {
    depth <= MAX_DEPTH
        && a.inner().len() == b.inner().len()
        && a.inner()
            .iter()
            .zip(b.inner())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb, depth + 1))
}

fn same_value(a: &AMQPValue, b: &AMQPValue, depth: usize) -> bool {
    match (a, b) {
        (AMQPValue::Float(x), AMQPValue::Float(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::Double(x), AMQPValue::Double(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => same_table(x, y, depth),
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => {
            depth <= MAX_DEPTH
                && x.as_slice().len() == y.as_slice().len()
                && x.as_slice()
                    .iter()
                    .zip(y.as_slice())
                    .all(|(p, q)| same_value(p, q, depth + 1))
        }
        (AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_), _)
        | (_, AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_)) => false,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn routed(
        t: &BindingTable<&'static str>,
        key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        t.route(key, headers, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn direct_exchange() {
        let none = FieldTable::default();
        let mut t = BindingTable::new(ExchangeKind::Direct);
        assert_eq!(t.kind(), ExchangeKind::Direct);
        assert!(t.is_empty());
        assert_eq!(t.bind("q1", "k", &none), Ok(true));
        assert_eq!(t.bind("q1", "k", &none), Ok(false));
        assert_eq!(t.bind("q2", "k", &none), Ok(true));
        assert_eq!(t.bind("q3", "other", &none), Ok(true));
        assert_eq!(t.len(), 3);
        assert_eq!(routed(&t, "k", None), vec!["q1", "q2"]);
        assert_eq!(routed(&t, "other", None), vec!["q3"]);
        assert_eq!(routed(&t, "nope", None), Vec::<&str>::new());
        // Direct exchanges ignore x-match garbage: only headers exchanges validate it.
        assert_eq!(
            t.bind("q4", "k", &args(&[("x-match", s("nonsense"))])),
            Ok(true)
        );
        assert_eq!(routed(&t, "k", None), vec!["q1", "q2", "q4"]);
    }

    #[test]
    fn arguments_are_part_of_binding_identity() {
        let a1 = args(&[("x-foo", s("1"))]);
        let a2 = args(&[("x-foo", s("2"))]);
        let mut t = BindingTable::new(ExchangeKind::Direct);
        assert_eq!(t.bind("q", "k", &a1), Ok(true));
        assert_eq!(t.bind("q", "k", &a2), Ok(true));
        assert_eq!(t.len(), 2);
        assert_eq!(routed(&t, "k", None), vec!["q"], "still routed once");
        assert!(t.unbind(&"q", "k", &a1));
        assert!(!t.unbind(&"q", "k", &a1));
        assert_eq!(
            routed(&t, "k", None),
            vec!["q"],
            "second binding keeps routing"
        );
        assert!(t.unbind(&"q", "k", &a2));
        assert_eq!(routed(&t, "k", None), Vec::<&str>::new());
        assert!(!t.has_destination(&"q"));
        assert!(t.is_empty());
    }

    #[test]
    fn identity_distinguishes_types_and_handles_nan() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        let int32 = args(&[("n", AMQPValue::LongInt(1))]);
        let int64 = args(&[("n", AMQPValue::LongLongInt(1))]);
        let nan = args(&[("n", AMQPValue::Double(f64::NAN))]);
        assert_eq!(t.bind("q", "a", &int32), Ok(true));
        assert_eq!(t.bind("q", "a", &int64), Ok(true));
        assert_eq!(t.bind("q", "a", &nan), Ok(true));
        assert_eq!(t.bind("q", "a", &nan), Ok(false));
        assert!(t.unbind(&"q", "a", &nan));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn fanout_exchange() {
        let none = FieldTable::default();
        let mut t = BindingTable::new(ExchangeKind::Fanout);
        assert_eq!(t.bind("q1", "", &none), Ok(true));
        assert_eq!(
            t.bind("q1", "x", &none),
            Ok(true),
            "key is part of identity"
        );
        assert_eq!(t.bind("q2", "y", &none), Ok(true));
        assert_eq!(routed(&t, "anything", None), vec!["q1", "q2"]);
        assert!(t.unbind(&"q1", "", &none));
        assert_eq!(routed(&t, "", None), vec!["q1", "q2"]);
        assert!(!t.unbind(&"q1", "", &none));
        assert!(t.unbind(&"q1", "x", &none));
        assert_eq!(routed(&t, "", None), vec!["q2"]);
    }

    #[test]
    fn topic_exchange() {
        let none = FieldTable::default();
        let mut t = BindingTable::new(ExchangeKind::Topic);
        for (q, k) in [
            ("q1", "*.orange.*"),
            ("q2", "*.*.rabbit"),
            ("q2", "lazy.#"),
            ("q3", "#"),
        ] {
            assert_eq!(t.bind(q, k, &none), Ok(true));
        }
        assert_eq!(
            routed(&t, "quick.orange.rabbit", None),
            vec!["q1", "q2", "q3"]
        );
        assert_eq!(
            routed(&t, "lazy.orange.elephant", None),
            vec!["q1", "q2", "q3"]
        );
        assert_eq!(routed(&t, "quick.orange.fox", None), vec!["q1", "q3"]);
        assert_eq!(routed(&t, "lazy.brown.fox", None), vec!["q2", "q3"]);
        assert_eq!(routed(&t, "lazy.pink.rabbit", None), vec!["q2", "q3"]);
        assert_eq!(routed(&t, "quick.brown.fox", None), vec!["q3"]);
        assert_eq!(routed(&t, "orange", None), vec!["q3"]);
        assert_eq!(routed(&t, "quick.orange.male.rabbit", None), vec!["q3"]);
        assert_eq!(t.unbind_all(&"q2"), 2);
        assert_eq!(routed(&t, "lazy.pink.rabbit", None), vec!["q3"]);
    }

    #[test]
    fn headers_exchange() {
        let mut t = BindingTable::new(ExchangeKind::Headers);
        let all = args(&[("format", s("pdf")), ("type", s("report"))]);
        let any = args(&[
            ("x-match", s("any")),
            ("format", s("zip")),
            ("type", s("log")),
        ]);
        assert_eq!(t.bind("all", "", &all), Ok(true));
        assert_eq!(t.bind("any", "ignored", &any), Ok(true));
        assert_eq!(t.bind("any", "other", &any), Ok(true));
        let msg = |pairs: &[(&str, AMQPValue)]| args(pairs);
        assert_eq!(
            routed(
                &t,
                "x",
                Some(&msg(&[("format", s("pdf")), ("type", s("report"))]))
            ),
            vec!["all"]
        );
        assert_eq!(
            routed(
                &t,
                "x",
                Some(&msg(&[("format", s("pdf")), ("type", s("log"))]))
            ),
            vec!["any"]
        );
        assert_eq!(routed(&t, "x", None), Vec::<&str>::new());
        let everything = args(&[]);
        assert_eq!(t.bind("catch-all", "", &everything), Ok(true));
        assert_eq!(routed(&t, "x", None), vec!["catch-all"]);
    }

    #[test]
    fn headers_bind_rejects_bad_x_match() {
        let mut t = BindingTable::new(ExchangeKind::Headers);
        let bad = args(&[("x-match", s("foo"))]);
        let err = t.bind("q", "", &bad).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                "Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x"
                    .to_owned()
            )
        );
        assert!(t.is_empty());
        assert_eq!(
            BindingTable::<u8>::validate(ExchangeKind::Topic, &bad),
            Ok(())
        );
        assert!(BindingTable::<u8>::validate(ExchangeKind::Headers, &bad).is_err());
    }

    #[test]
    fn listing_and_unbind_all() {
        let none = FieldTable::default();
        let a = args(&[("k", AMQPValue::LongInt(1))]);
        let mut t = BindingTable::new(ExchangeKind::Direct);
        t.bind("q1", "a", &none).ok();
        t.bind("q1", "b", &a).ok();
        t.bind("q2", "a", &none).ok();
        let mut listed = t.bindings();
        listed.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
        assert_eq!(
            listed,
            vec![
                ("q1", "a".to_owned(), none.clone()),
                ("q1", "b".to_owned(), a.clone()),
                ("q2", "a".to_owned(), none.clone()),
            ]
        );
        assert_eq!(t.unbind_all(&"q1"), 2);
        assert_eq!(t.unbind_all(&"q1"), 0);
        assert_eq!(t.len(), 1);
        assert!(!t.has_destination(&"q1"));
        assert!(t.has_destination(&"q2"));
        assert_eq!(routed(&t, "a", None), vec!["q2"]);
        assert_eq!(routed(&t, "b", None), Vec::<&str>::new());
    }

    #[test]
    fn route_appends_without_touching_previous_items() {
        let none = FieldTable::default();
        let mut t = BindingTable::new(ExchangeKind::Fanout);
        t.bind("q1", "", &none).ok();
        let mut out = vec!["q1"];
        t.route("", None, &mut out);
        assert_eq!(out, vec!["q1", "q1"]);
    }
}
