//! Property tests: `BindingTable` against deliberately naive reference models.
//!
//! * Topic: a recursive matcher over word slices (no trie).
//! * Headers: a port of RabbitMQ 3.x's sorted-merge `headers_match/5`, fed with values
//!   converted to a model of the Erlang terms RabbitMQ compares, with 4.x's exact (`=:=`)
//!   equality. It is a different algorithm from the implementation's per-condition lookups.
//! * Binding identity and bookkeeping: a plain `Vec` of (dest, key, args) triples.

use std::collections::BTreeMap;

use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use warren_routing::{BindingTable, ExchangeKind};

// ---------------------------------------------------------------- reference models

/// RabbitMQ's split: the empty key has no words, otherwise split on every dot.
fn split(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

fn naive_topic(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => (0..=words.len()).any(|i| naive_topic(rest, &words[i..])),
        Some((&"*", rest)) => !words.is_empty() && naive_topic(rest, &words[1..]),
        Some((lit, rest)) => words.first() == Some(lit) && naive_topic(rest, &words[1..]),
    }
}

/// The Erlang term `rabbit_binary_parser` produces for a field value.
#[derive(Debug, PartialEq)]
enum Term {
    Int(i128),
    Float(f64),
    Bin(Vec<u8>),
    Atom(&'static str),
    Tuple(Vec<Term>),
    List(Vec<Term>),
}

fn type_atom(v: &AMQPValue) -> &'static str {
    use AMQPValue::*;
    match v {
        Boolean(_) => "bool",
        ShortShortInt(_) => "byte",
        ShortShortUInt(_) => "unsignedbyte",
        ShortInt(_) => "short",
        ShortUInt(_) => "unsignedshort",
        LongInt(_) => "signedint",
        LongUInt(_) => "unsignedint",
        LongLongInt(_) => "long",
        Float(_) => "float",
        Double(_) => "double",
        DecimalValue(_) => "decimal",
        ShortString(_) | LongString(_) => "longstr",
        FieldArray(_) => "array",
        Timestamp(_) => "timestamp",
        FieldTable(_) => "table",
        ByteArray(_) => "binary",
        Void => "void",
    }
}

fn term(v: &AMQPValue) -> Term {
    use AMQPValue::*;
    match v {
        Boolean(b) => Term::Atom(if *b { "true" } else { "false" }),
        ShortShortInt(i) => Term::Int((*i).into()),
        ShortShortUInt(i) => Term::Int((*i).into()),
        ShortInt(i) => Term::Int((*i).into()),
        ShortUInt(i) => Term::Int((*i).into()),
        LongInt(i) => Term::Int((*i).into()),
        LongUInt(i) => Term::Int((*i).into()),
        LongLongInt(i) => Term::Int((*i).into()),
        Timestamp(i) => Term::Int((*i).into()),
        Float(f) => Term::Float((*f).into()),
        Double(f) => Term::Float(*f),
        DecimalValue(d) => Term::Tuple(vec![Term::Int(d.scale.into()), Term::Int(d.value.into())]),
        ShortString(s) => Term::Bin(s.as_str().as_bytes().to_vec()),
        LongString(s) => Term::Bin(s.as_bytes().to_vec()),
        ByteArray(b) => Term::Bin(b.as_slice().to_vec()),
        Void => Term::Atom("undefined"),
        FieldArray(a) => Term::List(
            a.as_slice()
                .iter()
                .map(|x| Term::Tuple(vec![Term::Atom(type_atom(x)), term(x)]))
                .collect(),
        ),
        FieldTable(t) => Term::List(
            t.inner()
                .iter()
                .map(|(k, x)| {
                    Term::Tuple(vec![
                        Term::Bin(k.as_str().as_bytes().to_vec()),
                        Term::Atom(type_atom(x)),
                        term(x),
                    ])
                })
                .collect(),
        ),
    }
}

fn ref_headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = match args.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => s.as_bytes().to_vec(),
        _ => b"all".to_vec(),
    };
    let (any_mode, with_x) = match mode.as_slice() {
        b"any" => (true, false),
        b"all-with-x" => (false, true),
        b"any-with-x" => (true, true),
        _ => (false, false),
    };
    let pattern: Vec<_> = args.inner().iter().collect();
    let empty = FieldTable::default();
    let data: Vec<_> = headers.unwrap_or(&empty).inner().iter().collect();
    let (mut all, mut any) = (true, false);
    let (mut p, mut d) = (0, 0);
    loop {
        if !any_mode && !all {
            return false;
        }
        if any_mode && any {
            return true;
        }
        let Some(&(pk, pv)) = pattern.get(p) else {
            return if any_mode { any } else { all };
        };
        if pk.as_str() == "x-match" || (!with_x && pk.as_str().starts_with("x-")) {
            p += 1;
            continue;
        }
        let Some(&(dk, dv)) = data.get(d) else {
            all = false;
            p = pattern.len();
            continue;
        };
        if pk > dk {
            d += 1;
        } else if pk < dk {
            all = false;
            p += 1;
        } else {
            if matches!(pv, AMQPValue::Void) || term(pv) == term(dv) {
                any = true;
            } else {
                all = false;
            }
            p += 1;
            d += 1;
        }
    }
}

type Triple = (u8, String, FieldTable);

fn model_route(kind: ExchangeKind, model: &[Triple], msg: &Message) -> Vec<u8> {
    let mut out: Vec<u8> = model
        .iter()
        .filter(|(_, key, args)| match kind {
            ExchangeKind::Direct => key == &msg.key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => naive_topic(&split(key), &split(&msg.key)),
            ExchangeKind::Headers => ref_headers_match(args, msg.headers.as_ref()),
        })
        .map(|(d, _, _)| *d)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

// ---------------------------------------------------------------- strategies

#[derive(Debug, Clone)]
struct Message {
    key: String,
    headers: Option<FieldTable>,
}

fn topic_key(words: Vec<&'static str>) -> impl Strategy<Value = String> {
    vec(select(words), 0..5).prop_map(|w| w.join("."))
}

fn binding_key() -> impl Strategy<Value = String> {
    prop_oneof![
        topic_key(vec!["a", "b", "", "*", "#"]),
        select(vec!["#.#", "a.#.b", "#.*", "*.#", "#.a.#", "a..b", "", "."]).prop_map(String::from),
    ]
}

fn routing_key() -> impl Strategy<Value = String> {
    prop_oneof![
        topic_key(vec!["a", "b", "", "c"]),
        topic_key(vec!["a", "*", "#"]),
        select(vec!["", ".", "a..b", "a.b.b", "b.a.b"]).prop_map(String::from),
    ]
}

fn key_name() -> impl Strategy<Value = ShortString> {
    select(vec!["a", "b", "c", "x-a", "x-b"]).prop_map(ShortString::from)
}

fn value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        (0i64..3).prop_map(AMQPValue::LongLongInt),
        (0i32..3).prop_map(AMQPValue::LongInt),
        (0u8..3).prop_map(AMQPValue::ShortShortUInt),
        (-1i8..2).prop_map(AMQPValue::ShortShortInt),
        (0u16..2).prop_map(AMQPValue::ShortUInt),
        (0u64..2).prop_map(AMQPValue::Timestamp),
        select(vec![0.0, 1.0, 0.1]).prop_map(AMQPValue::Double),
        select(vec![0.0f32, 1.0, 0.1]).prop_map(AMQPValue::Float),
        select(vec!["0", "1", "a"]).prop_map(|s| AMQPValue::LongString(LongString::from(s))),
        select(vec!["0", "1"]).prop_map(|s| AMQPValue::ShortString(ShortString::from(s))),
        select(vec!["1", "a"]).prop_map(|s| AMQPValue::ByteArray(ByteArray::from(s.as_bytes()))),
        any::<bool>().prop_map(AMQPValue::Boolean),
        Just(AMQPValue::Void),
        (0u8..2, 0u32..2)
            .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            btree_map(key_name(), inner, 0..3)
                .prop_map(|m| AMQPValue::FieldTable(FieldTable::from(m))),
        ]
    })
}

fn table() -> impl Strategy<Value = FieldTable> {
    btree_map(key_name(), value(), 0..4).prop_map(FieldTable::from)
}

/// Valid headers-binding arguments: any table plus an optional valid `x-match`.
fn binding_args() -> impl Strategy<Value = FieldTable> {
    (
        table(),
        proptest::option::of(select(vec!["all", "any", "all-with-x", "any-with-x"])),
    )
        .prop_map(|(t, x_match)| {
            let mut m: BTreeMap<ShortString, AMQPValue> = t.inner().clone();
            if let Some(x) = x_match {
                m.insert("x-match".into(), AMQPValue::LongString(x.into()));
            }
            FieldTable::from(m)
        })
}

fn message() -> impl Strategy<Value = Message> {
    (routing_key(), proptest::option::of(table()))
        .prop_map(|(key, headers)| Message { key, headers })
}

fn kind() -> impl Strategy<Value = ExchangeKind> {
    select(vec![
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ])
}

fn triple() -> impl Strategy<Value = Triple> {
    (
        0u8..5,
        binding_key(),
        prop_oneof![Just(FieldTable::default()), binding_args()],
    )
}

#[derive(Debug, Clone)]
enum Op {
    Bind(Triple),
    Unbind(Triple),
    UnbindAll(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => triple().prop_map(Op::Bind),
        2 => triple().prop_map(Op::Unbind),
        1 => (0u8..5).prop_map(Op::UnbindAll),
    ]
}

// ---------------------------------------------------------------- helpers

fn route(t: &BindingTable<u8>, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    t.route(&msg.key, msg.headers.as_ref(), &mut out);
    out
}

fn sorted_unique(mut v: Vec<u8>) -> Result<Vec<u8>, TestCaseError> {
    let len = v.len();
    v.sort_unstable();
    v.dedup();
    prop_assert_eq!(v.len(), len, "route yielded duplicates");
    Ok(v)
}

fn build(kind: ExchangeKind, triples: &[Triple]) -> BindingTable<u8> {
    let mut t = BindingTable::new(kind);
    for (d, k, a) in triples {
        let _ = t.bind(*d, k, a);
    }
    t
}

fn sorted_listing(list: Vec<Triple>) -> Vec<(u8, String, String)> {
    let mut v: Vec<_> = list
        .into_iter()
        .map(|(d, k, a)| (d, k, format!("{a:?}")))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- properties

// Case count: proptest's default (256), overridable with PROPTEST_CASES.
proptest! {
    #[test]
    fn topic_trie_matches_naive_matcher(
        patterns in vec(binding_key(), 0..12),
        keys in vec(routing_key(), 1..8),
    ) {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        for (i, p) in patterns.iter().enumerate() {
            let _ = t.bind(i as u8, p, &FieldTable::default());
        }
        for key in &keys {
            let got = sorted_unique(route(&t, &Message { key: key.clone(), headers: None }))?;
            let want: Vec<u8> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| naive_topic(&split(p), &split(key)))
                .map(|(i, _)| i as u8)
                .collect();
            prop_assert_eq!(got, want, "key {:?} patterns {:?}", key, patterns);
        }
    }

    #[test]
    fn headers_matcher_matches_rabbitmq_merge_algorithm(
        bindings in vec(binding_args(), 0..8),
        messages in vec(proptest::option::of(table()), 1..6),
    ) {
        let mut t = BindingTable::new(ExchangeKind::Headers);
        for (i, args) in bindings.iter().enumerate() {
            prop_assert_eq!(t.bind(i as u8, "", args), Ok(true));
        }
        for headers in &messages {
            let msg = Message { key: String::new(), headers: headers.clone() };
            let got = sorted_unique(route(&t, &msg))?;
            let want: Vec<u8> = bindings
                .iter()
                .enumerate()
                .filter(|(_, a)| ref_headers_match(a, headers.as_ref()))
                .map(|(i, _)| i as u8)
                .collect();
            prop_assert_eq!(got, want, "headers {:?}", headers);
        }
    }

    /// A header equal to the binding value (same key, any representation of the same term)
    /// must match; stresses value equality more directly than random tables do.
    #[test]
    fn headers_single_condition_equality(a in value(), b in value()) {
        let mut args = BTreeMap::new();
        args.insert(ShortString::from("k"), a.clone());
        let args = FieldTable::from(args);
        let mut hdrs = BTreeMap::new();
        hdrs.insert(ShortString::from("k"), b.clone());
        let hdrs = FieldTable::from(hdrs);
        let mut t = BindingTable::new(ExchangeKind::Headers);
        prop_assert_eq!(t.bind(0u8, "", &args), Ok(true));
        let got = !route(&t, &Message { key: String::new(), headers: Some(hdrs.clone()) }).is_empty();
        prop_assert_eq!(got, ref_headers_match(&args, Some(&hdrs)));
    }

    #[test]
    fn table_agrees_with_model(k in kind(), ops in vec(op(), 0..40), probes in vec(message(), 1..6)) {
        let mut t = BindingTable::new(k);
        let mut model: Vec<Triple> = Vec::new();
        for op in ops {
            match op {
                Op::Bind((d, key, args)) => {
                    let existed = model.iter().any(|(md, mk, ma)| *md == d && *mk == key && *ma == args);
                    prop_assert_eq!(t.bind(d, &key, &args), Ok(!existed));
                    if !existed {
                        model.push((d, key, args));
                    }
                }
                Op::Unbind((d, key, args)) => {
                    let pos = model.iter().position(|(md, mk, ma)| *md == d && *mk == key && *ma == args);
                    prop_assert_eq!(t.unbind(&d, &key, &args), pos.is_some());
                    if let Some(pos) = pos {
                        model.remove(pos);
                    }
                }
                Op::UnbindAll(d) => {
                    let before = model.len();
                    model.retain(|(md, _, _)| *md != d);
                    prop_assert_eq!(t.unbind_all(&d), before - model.len());
                }
            }
            prop_assert_eq!(t.len(), model.len());
            prop_assert_eq!(t.is_empty(), model.is_empty());
            for d in 0u8..5 {
                prop_assert_eq!(t.has_destination(&d), model.iter().any(|(md, _, _)| *md == d));
            }
            prop_assert_eq!(sorted_listing(t.bindings()), sorted_listing(model.clone()));
            for msg in &probes {
                let got = sorted_unique(route(&t, msg))?;
                prop_assert_eq!(got, model_route(k, &model, msg), "message {:?}", msg);
            }
        }
    }

    #[test]
    fn bind_then_unbind_restores_routing(
        k in kind(),
        existing in vec(triple(), 0..10),
        extra in triple(),
        probes in vec(message(), 1..6),
    ) {
        let mut t = build(k, &existing);
        let before: Vec<Vec<u8>> = probes.iter().map(|m| sorted_unique(route(&t, m))).collect::<Result<_, _>>()?;
        let listing_before = sorted_listing(t.bindings());
        let (d, key, args) = extra;
        if t.bind(d, &key, &args) == Ok(true) {
            prop_assert!(t.unbind(&d, &key, &args));
            let after: Vec<Vec<u8>> = probes.iter().map(|m| sorted_unique(route(&t, m))).collect::<Result<_, _>>()?;
            prop_assert_eq!(after, before);
            prop_assert_eq!(sorted_listing(t.bindings()), listing_before);
        }
    }

    #[test]
    fn route_never_yields_duplicates_and_keeps_prefix(
        k in kind(),
        existing in vec(triple(), 0..24),
        probes in vec(message(), 1..6),
    ) {
        let t = build(k, &existing);
        for msg in &probes {
            let mut out = vec![0u8, 0, 1];
            t.route(&msg.key, msg.headers.as_ref(), &mut out);
            prop_assert_eq!(&out[..3], &[0u8, 0, 1][..]);
            sorted_unique(out[3..].to_vec())?;
        }
    }

    #[test]
    fn unbind_all_removes_everything_for_a_destination(
        k in kind(),
        existing in vec(triple(), 0..16),
        victim in 0u8..5,
        probes in vec(message(), 1..6),
    ) {
        let mut t = build(k, &existing);
        let len = t.len();
        let bound_to_victim = t.bindings().iter().filter(|(d, _, _)| *d == victim).count();
        prop_assert_eq!(t.unbind_all(&victim), bound_to_victim);
        prop_assert_eq!(t.len(), len - bound_to_victim);
        prop_assert!(!t.has_destination(&victim));
        prop_assert!(t.bindings().iter().all(|(d, _, _)| *d != victim));
        for msg in &probes {
            prop_assert!(!route(&t, msg).contains(&victim));
        }
    }

    #[test]
    fn routing_never_panics_on_arbitrary_input(
        k in kind(),
        patterns in vec(".{0,12}", 0..8),
        key in ".{0,40}",
        headers in proptest::option::of(table()),
    ) {
        let mut t = BindingTable::new(k);
        for (i, p) in patterns.iter().enumerate() {
            let _ = t.bind(i as u8, p, &FieldTable::default());
        }
        let mut out = Vec::new();
        t.route(&key, headers.as_ref(), &mut out);
        sorted_unique(out)?;
    }
}

#[test]
fn headers_rejects_invalid_x_match_without_side_effects() {
    let mut t = BindingTable::new(ExchangeKind::Headers);
    let mut args = BTreeMap::new();
    args.insert(
        ShortString::from("x-match"),
        AMQPValue::LongString("foo".into()),
    );
    let args = FieldTable::from(args);
    let err = t.bind(1u8, "", &args).unwrap_err();
    assert_eq!(
        format!("PRECONDITION_FAILED - {err}"),
        "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x"
    );
    assert!(t.is_empty());
    assert!(!t.has_destination(&1));
}
