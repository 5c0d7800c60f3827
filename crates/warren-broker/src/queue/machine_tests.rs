//! The queue machine without sockets, threads or a real store: a simulated
//! store answers its storage requests in order, and a virtual clock drives
//! TTL. A "crash" keeps only what the simulated store made durable.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use warren_codec::ContentHeader;

use super::args::QueueArgs;
use super::command::{Command, ConsumerCodec, Outcome, Reader};
use super::consumers::Slot;
use super::effects::{Effects, ReadBack, StorageOp};
use super::machine::{Enqueued, Got, QueueMachine, Storage};
use super::marks::MARK_AHEAD;
use super::paging::PAGE_BYTES;
use super::ready::{QueuedMessage, Stored, Time};
use crate::message::{Address, Message};

/// A consumer with a prefetch window.
#[derive(Debug, Clone)]
struct TestConsumer {
    id: u32,
    room: Rc<Cell<u32>>,
    no_ack: bool,
    priority: i32,
}

impl TestConsumer {
    fn new(prefetch: u32) -> TestConsumer {
        thread_local!(static NEXT_ID: Cell<u32> = const { Cell::new(0) });
        TestConsumer {
            id: NEXT_ID.with(|n| {
                n.set(n.get() + 1);
                n.get()
            }),
            room: Rc::new(Cell::new(prefetch)),
            no_ack: false,
            priority: 0,
        }
    }
}

/// Names test consumers by id in encoded commands. A consumer it has not seen
/// (a replay) is made from the encoding, with the room it had when it came.
#[derive(Default)]
struct TestCodec {
    consumers: HashMap<u32, TestConsumer>,
}

impl ConsumerCodec<TestConsumer> for TestCodec {
    fn put(&self, c: &TestConsumer, out: &mut Vec<u8>) {
        out.extend_from_slice(&c.id.to_be_bytes());
        out.extend_from_slice(&c.room.get().to_be_bytes());
        out.push(c.no_ack as u8);
        out.extend_from_slice(&(c.priority as u32).to_be_bytes());
    }
    fn take(&mut self, r: &mut Reader<'_>) -> Option<TestConsumer> {
        let (id, room, no_ack, priority) = (r.u32()?, r.u32()?, r.bool()?, r.u32()? as i32);
        let c = self.consumers.entry(id).or_insert_with(|| TestConsumer {
            id,
            room: Rc::new(Cell::new(room)),
            no_ack,
            priority,
        });
        Some(c.clone())
    }
    fn put_key(&self, key: &u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&key.to_be_bytes());
    }
    fn take_key(&mut self, r: &mut Reader<'_>) -> Option<u32> {
        r.u32()
    }
}

/// What a run fed its machine, in order: enough to run it again.
#[derive(Clone)]
enum Entry {
    Command(Time, Bytes),
    /// The test gave consumer `id` this much room (its credit).
    Room(u32, u32),
    /// A crash: a new, empty machine.
    Restart(Time),
}

impl Slot for TestConsumer {
    type Key = u32;

    fn has_key(&self, key: &u32) -> bool {
        self.id == *key
    }
    fn try_reserve(&self) -> bool {
        let r = self.room.get();
        if r == 0 {
            return false;
        }
        self.room.set(r - 1);
        true
    }
    fn unreserve(&self) {
        self.room.set(self.room.get() + 1);
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn no_ack(&self) -> bool {
        self.no_ack
    }
    fn exclusive(&self) -> bool {
        false
    }
}

/// A 1-KiB-body message whose body starts with its index.
fn message(i: u64, persistent: bool, priority: Option<u8>) -> Arc<Message> {
    let mut raw = BytesMut::new();
    raw.put_u16(60);
    raw.put_u16(0);
    raw.put_u64(1024);
    let mut flags = 1 << 12; // delivery mode
    if priority.is_some() {
        flags |= 1 << 11;
    }
    raw.put_u16(flags);
    raw.put_u8(if persistent { 2 } else { 1 });
    if let Some(p) = priority {
        raw.put_u8(p);
    }
    let mut body = vec![0u8; 1024];
    body[..8].copy_from_slice(&i.to_be_bytes());
    Arc::new(Message::new(
        Address::new(String::new(), "q".into(), Vec::new()),
        ContentHeader::parse(raw.freeze()).expect("a valid header"),
        Bytes::from(body),
    ))
}

fn index(m: &QueuedMessage) -> u64 {
    index_of(&m.message)
}

fn index_of(m: &Message) -> u64 {
    let b = m.content.body();
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The simulated store: records, a durable delivery mark, and requests waiting
/// to be served in order.
#[derive(Default)]
struct SimStore {
    records: BTreeMap<u64, Arc<Message>>,
    spilled: BTreeMap<u64, Arc<Message>>,
    mark: Option<u64>,
    queue: VecDeque<StorageOp>,
    /// The next syncs fail (a full disk).
    failing: bool,
    /// The next reads fail (an I/O error).
    unreadable: bool,
}

/// A machine, its store, a clock and what its effects delivered.
struct Sim {
    m: QueueMachine<TestConsumer>,
    store: SimStore,
    now: Time,
    delivered: Vec<QueuedMessage>,
    dead: Vec<QueuedMessage>,
    /// Indexes of the messages acked, in order.
    acked_log: Vec<u64>,
    /// Indexes of the persistent messages whose write reached the store
    /// (what a publisher confirm covers).
    confirmed: Vec<u64>,
    codec: TestCodec,
    /// Every input, as encoded (commands go through their encoding).
    log: Vec<Entry>,
    /// Each command's outcome and effects, in short.
    trace: Vec<String>,
    args: QueueArgs,
    storage: Storage,
}

impl Sim {
    fn new(args: QueueArgs, storage: Storage) -> Sim {
        let now = Time(1_000_000_000);
        Sim {
            m: QueueMachine::new(args.clone(), storage, false, now),
            store: SimStore::default(),
            now,
            delivered: Vec::new(),
            dead: Vec::new(),
            acked_log: Vec::new(),
            confirmed: Vec::new(),
            codec: TestCodec::default(),
            log: Vec::new(),
            trace: Vec::new(),
            args,
            storage,
        }
    }

    /// Run one command through its byte encoding, log it, and take its effects.
    fn apply(&mut self, command: Command<TestConsumer>) -> (Outcome, Option<QueuedMessage>) {
        if let Command::Consume { consumer } = &command {
            self.codec.consumers.insert(consumer.id, consumer.clone());
        }
        let mut bytes = Vec::new();
        command.encode(&self.codec, &mut bytes);
        let bytes = Bytes::from(bytes);
        self.log.push(Entry::Command(self.now, bytes.clone()));
        let command = Command::decode(&bytes, &mut self.codec).expect("a command decodes");
        let mut out = Effects::default();
        let (outcome, got) = self.m.apply(command, self.now, &mut out);
        self.trace.push(summary(&outcome, &got, &out));
        self.take(out);
        (outcome, got)
    }

    /// Give a consumer more room (its credit), as a channel does on ack.
    fn give_room(&mut self, c: &TestConsumer, room: u32) {
        c.room.set(room);
        self.log.push(Entry::Room(c.id, room));
    }

    /// `basic.get` through the command path.
    fn get(&mut self, no_ack: bool) -> Got {
        match self.apply(Command::Get { no_ack }) {
            (Outcome::Got(Some((_, left))), Some(m)) => Got::Message(m, left),
            (Outcome::GetWait, _) => Got::Wait,
            _ => Got::Empty,
        }
    }

    /// Take a command's effects: storage requests wait for `serve`.
    fn take(&mut self, out: Effects<TestConsumer>) {
        self.store.queue.extend(out.storage);
        self.delivered
            .extend(out.deliveries.into_iter().map(|d| d.message));
        for d in out.deaths {
            // At least once: the source record is forgotten only now.
            self.forget(d.message.seq, d.message.stored);
            self.dead.push(d.message);
        }
    }

    fn forget(&mut self, seq: u64, stored: Stored) {
        match stored {
            Stored::Durable => self.store.records.remove(&seq),
            Stored::Spilled => self.store.spilled.remove(&seq),
            Stored::No => None,
        };
    }

    fn publish(&mut self, msg: Arc<Message>, spill: bool) -> Enqueued {
        match self.apply(Command::Publish {
            message: msg,
            spill,
        }) {
            (Outcome::Enqueued(e), _) => e,
            other => panic!("publish answered {other:?}"),
        }
    }

    /// Serve every storage request, including those their completions cause.
    fn serve(&mut self) {
        while self.serve_one() {}
    }

    /// Serve the oldest storage request; false when there is none.
    fn serve_one(&mut self) -> bool {
        let Some(op) = self.store.queue.pop_front() else {
            return false;
        };
        {
            match op {
                StorageOp::Write {
                    seq,
                    message,
                    stored,
                } => {
                    if stored == Stored::Durable {
                        self.confirmed.push(index_of(&message));
                    }
                    match stored {
                        Stored::Durable => self.store.records.insert(seq, message),
                        Stored::Spilled => self.store.spilled.insert(seq, message),
                        Stored::No => None,
                    };
                }
                StorageOp::Forget { seq, stored } => self.forget(seq, stored),
                StorageOp::Read { seqs, page_in } => {
                    let records = seqs
                        .into_iter()
                        .map(|s| {
                            let r = self.store.records.get(&s).or(self.store.spilled.get(&s));
                            let r = match r {
                                _ if self.store.unreadable => ReadBack::Unavailable,
                                Some(m) => ReadBack::Body(m.clone()),
                                None => ReadBack::Missing,
                            };
                            (s, r)
                        })
                        .collect();
                    self.apply(Command::Loaded { records, page_in });
                }
                StorageOp::Sync { upto } => {
                    let ok = !self.store.failing;
                    self.apply(Command::Written { upto, ok });
                }
                StorageOp::Mark { upto } => {
                    self.store.mark = Some(self.store.mark.map_or(upto, |m| m.max(upto)));
                    self.apply(Command::Marked { upto, ok: true });
                }
            }
        }
        true
    }

    fn consume(&mut self, c: TestConsumer) {
        let (outcome, _) = self.apply(Command::Consume { consumer: c });
        assert_eq!(outcome, Outcome::Consumed(Ok(())));
    }

    /// Ack everything delivered so far, give the credit back, and serve.
    fn ack_all(&mut self, c: &TestConsumer) {
        let acked = std::mem::take(&mut self.delivered);
        let settled = acked.iter().map(|m| (m.seq, m.stored)).collect();
        self.apply(Command::Ack { settled });
        self.give_room(c, c.room.get() + acked.len() as u32);
        self.apply(Command::Kick);
        self.serve();
        self.acked_log.extend(acked.iter().map(index));
    }

    fn tick(&mut self, ms: u64) {
        self.now = self.now.after_ms(ms);
        self.apply(Command::Tick);
    }

    /// Restart after a crash: a new machine restored from what is on disk.
    fn crash_and_restore(&mut self, args: QueueArgs) {
        assert_eq!((&args, self.storage), (&self.args, Storage::Durable));
        self.m = QueueMachine::new(args, Storage::Durable, false, self.now);
        self.log.push(Entry::Restart(self.now));
        let mark = self.store.mark;
        let records: Vec<(u64, Arc<Message>)> = std::mem::take(&mut self.store.records)
            .into_iter()
            .collect();
        self.store.spilled.clear();
        self.store.queue.clear();
        for (seq, message) in records {
            self.store.records.insert(seq, message.clone());
            self.apply(Command::Restore {
                seq,
                message,
                redelivered: mark.is_some_and(|u| seq <= u),
            });
        }
    }

    /// Feed a fresh machine (and fresh consumers) the logged inputs; returns
    /// its trace, which must equal this run's.
    fn replay(&self) -> Vec<String> {
        let start = Time(1_000_000_000);
        let mut m = QueueMachine::new(self.args.clone(), self.storage, false, start);
        let mut codec = TestCodec::default();
        let mut trace = Vec::new();
        for entry in &self.log {
            match entry {
                Entry::Command(now, bytes) => {
                    let command = Command::decode(bytes, &mut codec).expect("decodes");
                    let mut out = Effects::default();
                    let (outcome, got) = m.apply(command, *now, &mut out);
                    trace.push(summary(&outcome, &got, &out));
                }
                Entry::Room(id, room) => {
                    if let Some(c) = codec.consumers.get(id) {
                        c.room.set(*room);
                    }
                }
                Entry::Restart(now) => {
                    m = QueueMachine::new(self.args.clone(), self.storage, false, *now);
                }
            }
        }
        trace
    }
}

/// A command's outcome and effects in short: what a replay must reproduce.
fn summary(outcome: &Outcome, got: &Option<QueuedMessage>, out: &Effects<TestConsumer>) -> String {
    let storage: Vec<String> = out
        .storage
        .iter()
        .map(|op| match op {
            StorageOp::Write { seq, stored, .. } => format!("w{seq}{stored:?}"),
            StorageOp::Forget { seq, .. } => format!("f{seq}"),
            StorageOp::Read { seqs, page_in } => format!("r{seqs:?}{page_in}"),
            StorageOp::Sync { upto } => format!("s{upto}"),
            StorageOp::Mark { upto } => format!("m{upto}"),
        })
        .collect();
    let deliveries: Vec<(u32, u64, bool)> = out
        .deliveries
        .iter()
        .map(|d| (d.consumer.id, d.message.seq, d.message.redelivered))
        .collect();
    let deaths: Vec<(u64, &str)> = out
        .deaths
        .iter()
        .map(|d| (d.message.seq, d.reason.as_str()))
        .collect();
    format!(
        "{outcome:?} {:?} {storage:?} {deliveries:?} {deaths:?} {} {} {}",
        got.as_ref().map(|m| m.seq),
        out.cancelled.len(),
        out.wake_timer,
        out.wake_getters
    )
}

fn durable() -> (QueueArgs, Storage) {
    (QueueArgs::default(), Storage::Durable)
}

#[test]
fn a_mixed_backlog_past_the_window_is_delivered_in_order() {
    // Issue 10, symptom 1: persistent messages past the in-memory window, then
    // transient ones; a consumer with prefetch 500 must get every one.
    let (args, storage) = durable();
    let mut sim = Sim::new(args, storage);
    let persistent = 24 * 1024; // 24 MiB of 1 KiB bodies
    let transient = 6 * 1024;
    for i in 0..persistent + transient {
        assert_eq!(
            sim.publish(message(i, i < persistent, None), false),
            Enqueued::Accepted
        );
        sim.serve();
        assert!(
            sim.m.ready.loaded_bytes <= PAGE_BYTES + 1024,
            "memory stays bounded"
        );
    }
    let c = TestConsumer::new(500);
    sim.consume(c.clone());
    sim.serve();
    let mut rounds = 0;
    while !sim.delivered.is_empty() {
        sim.ack_all(&c);
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
    }
    assert_eq!(sim.acked_log.len() as u64, persistent + transient);
    assert!(
        sim.acked_log.windows(2).all(|w| w[0] + 1 == w[1]),
        "in order"
    );
    assert_eq!(sim.m.message_count(), 0);
    assert!(sim.store.records.is_empty() && sim.store.spilled.is_empty());
}

#[test]
fn a_transient_backlog_pages_when_memory_is_short() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::Spill);
    let n = 12 * 1024;
    for i in 0..n {
        sim.publish(message(i, false, None), true);
        sim.serve();
    }
    assert!(
        sim.m.ready.loaded_bytes <= PAGE_BYTES,
        "bodies past the window left memory"
    );
    assert!(
        !sim.store.spilled.is_empty(),
        "the rest went to the spill space"
    );
    let c = TestConsumer::new(100);
    sim.consume(c.clone());
    sim.serve();
    while !sim.delivered.is_empty() {
        sim.ack_all(&c);
    }
    assert_eq!(sim.acked_log, (0..n).collect::<Vec<_>>());
    assert!(sim.store.spilled.is_empty(), "acked spills are forgotten");
}

#[test]
fn without_memory_pressure_a_transient_backlog_stays_in_memory() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::Spill);
    for i in 0..12 * 1024 {
        sim.publish(message(i, false, None), false);
    }
    sim.serve();
    assert!(sim.store.spilled.is_empty());
    assert_eq!(sim.m.ready.unloaded, 0);
}

#[test]
fn a_paged_body_stays_in_memory_until_its_write_is_on_disk() {
    let (args, storage) = durable();
    let mut sim = Sim::new(args, storage);
    sim.store.failing = true;
    let n = 10 * 1024;
    for i in 0..n {
        sim.publish(message(i, true, None), false);
    }
    sim.serve();
    assert_eq!(sim.m.ready.unloaded, 0, "a failed sync drops no body");
    sim.store.failing = false;
    sim.publish(message(n, true, None), false);
    sim.serve();
    assert!(
        sim.m.ready.unloaded > 0,
        "once the disk works, bodies page out"
    );
}

#[test]
fn get_on_a_paged_head_waits_for_the_read() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::Spill);
    let n = 10 * 1024;
    for i in 0..n {
        sim.publish(message(i, false, None), true);
    }
    sim.serve();
    // The store answers only when a get has to wait, so the head does reach
    // the part of the queue that is only on disk.
    let (mut got, mut waits_on_disk) = (Vec::new(), 0);
    loop {
        let head_on_disk = sim.m.ready.front().is_some_and(|r| !r.is_loaded());
        match sim.get(true) {
            Got::Message(m, _) => got.push(index(&m)),
            Got::Wait => {
                waits_on_disk += usize::from(head_on_disk);
                sim.serve();
            }
            Got::Empty => break,
        }
    }
    assert!(waits_on_disk > 0, "the head was on disk at least once");
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

#[test]
fn ttl_and_dead_lettering_after_a_restart_lose_nothing() {
    // Issue 10, symptom 2: 12,000 persistent messages with a TTL and a DLX,
    // restored after a restart (most only on disk), expire while a slow
    // consumer takes some: every one is consumed or dead-lettered.
    let args = QueueArgs {
        message_ttl: Some(1_000),
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args.clone(), Storage::Durable);
    let n = 12_000;
    for i in 0..n {
        sim.publish(message(i, true, None), false);
    }
    sim.serve();
    sim.crash_and_restore(args);
    assert!(sim.m.ready.unloaded > 0, "most of the backlog is on disk");
    let c = TestConsumer::new(10);
    sim.consume(c.clone());
    sim.serve();
    sim.ack_all(&c);
    sim.tick(2_000);
    sim.serve();
    sim.ack_all(&c);
    let mut seen: Vec<u64> = sim.acked_log.clone();
    seen.extend(sim.dead.iter().map(index));
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len() as u64,
        n,
        "consumed + dead-lettered covers every message"
    );
    assert_eq!(sim.m.message_count(), 0);
    assert_eq!(sim.m.unreadable, 0);
    assert!(
        sim.store.records.is_empty(),
        "sources forgotten after dead-lettering"
    );
}

#[test]
fn expiry_without_a_dead_letter_exchange_forgets_the_records() {
    let args = QueueArgs {
        message_ttl: Some(10),
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args, Storage::Durable);
    for i in 0..100 {
        sim.publish(message(i, true, None), false);
    }
    sim.tick(20);
    sim.serve();
    assert_eq!(sim.m.message_count(), 0);
    assert!(sim.store.records.is_empty());
    assert!(sim.dead.is_empty());
}

#[test]
fn a_priority_backlog_pages_and_keeps_priority_order() {
    let args = QueueArgs {
        max_priority: Some(5),
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args, Storage::Durable);
    let n = 12 * 1024;
    let prio = |i: u64| ((i * 7919) % 6) as u8;
    for i in 0..n {
        sim.publish(message(i, true, Some(prio(i))), false);
        sim.serve();
    }
    assert!(sim.m.ready.unloaded > 0, "a priority queue pages too");
    let c = TestConsumer::new(200);
    sim.consume(c.clone());
    sim.serve();
    while !sim.delivered.is_empty() {
        sim.ack_all(&c);
    }
    assert_eq!(sim.acked_log.len() as u64, n);
    let keys: Vec<(std::cmp::Reverse<u8>, u64)> = sim
        .acked_log
        .iter()
        .map(|&i| (std::cmp::Reverse(prio(i)), i))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "priority, then arrival"
    );
}

#[test]
fn after_a_crash_only_messages_near_the_head_come_back_redelivered() {
    // Issue 10, symptom 4: 20,000 persistent messages, 10 delivered, crash.
    let (args, storage) = durable();
    let mut sim = Sim::new(args.clone(), storage);
    let n = 20_000;
    for i in 0..n {
        sim.publish(message(i, true, None), false);
    }
    sim.serve();
    let c = TestConsumer::new(10);
    sim.consume(c.clone());
    sim.serve();
    assert_eq!(sim.delivered.len(), 10);
    sim.crash_and_restore(args);
    let redelivered: Vec<u64> = std::iter::from_fn(|| {
        let got = sim.get(true);
        sim.serve();
        match got {
            Got::Message(m, _) => Some(Some(m)),
            Got::Wait => Some(None),
            Got::Empty => None,
        }
    })
    .flatten()
    .filter(|m| m.redelivered)
    .map(|m| index(&m))
    .collect();
    assert!(
        redelivered.len() as u64 >= 10,
        "the delivered ones are flagged"
    );
    assert!(
        redelivered.len() as u64 <= 10 + MARK_AHEAD,
        "at most MARK_AHEAD undelivered ones are flagged, got {}",
        redelivered.len()
    );
}

#[test]
fn round_robin_between_equal_consumers() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::None);
    let (a, b) = (TestConsumer::new(100), TestConsumer::new(100));
    sim.consume(a.clone());
    sim.consume(b.clone());
    for i in 0..10 {
        sim.publish(message(i, false, None), false);
    }
    assert_eq!((a.room.get(), b.room.get()), (95, 95));
}

#[test]
fn higher_priority_consumer_first_until_full() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::None);
    let low = TestConsumer::new(100);
    let high = TestConsumer {
        priority: 10,
        ..TestConsumer::new(3)
    };
    sim.consume(low.clone());
    sim.consume(high.clone());
    for i in 0..10 {
        sim.publish(message(i, false, None), false);
    }
    assert_eq!((high.room.get(), low.room.get()), (0, 93));
}

#[test]
fn only_the_single_active_consumer_receives_until_it_leaves() {
    let args = QueueArgs {
        single_active_consumer: true,
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args, Storage::None);
    let (a, b) = (TestConsumer::new(100), TestConsumer::new(100));
    sim.consume(a.clone());
    sim.consume(b.clone());
    for i in 0..4 {
        sim.publish(message(i, false, None), false);
    }
    assert_eq!((a.room.get(), b.room.get()), (96, 100));
    let (outcome, _) = sim.apply(Command::Cancel { key: a.id });
    assert_eq!(
        outcome,
        Outcome::Cancelled(super::machine::ConsumerRemoved::Removed)
    );
    for i in 4..7 {
        sim.publish(message(i, false, None), false);
    }
    assert_eq!(b.room.get(), 97);
}

#[test]
fn requeued_messages_keep_their_position() {
    let mut sim = Sim::new(QueueArgs::default(), Storage::None);
    for i in 0..3 {
        sim.publish(message(i, false, None), false);
    }
    let Got::Message(first, _) = sim.get(false) else {
        panic!("a message")
    };
    let Got::Message(second, _) = sim.get(false) else {
        panic!("a message")
    };
    sim.apply(Command::Requeue {
        messages: vec![second, first],
    });
    let Got::Message(m, left) = sim.get(false) else {
        panic!("a message")
    };
    assert_eq!((m.seq, m.redelivered, left), (0, true, 2));
}

#[test]
fn reject_publish_refuses_past_the_limit_and_forgets_the_record() {
    let args = QueueArgs {
        max_length: Some(2),
        overflow: super::args::Overflow::RejectPublish,
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args, Storage::Durable);
    let outcomes: Vec<Enqueued> = (0..3)
        .map(|i| sim.publish(message(i, true, None), false))
        .collect();
    sim.serve();
    assert_eq!(outcomes[2], Enqueued::Rejected);
    assert_eq!(sim.store.records.len(), 2);
}

/// A small deterministic PRNG (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Random commands, store answers that lag behind at random, and crashes:
/// every persistent message whose write reached the store is, in the end,
/// acked or dead-lettered at least once; without a crash, every message is.
#[test]
fn random_workloads_lose_no_confirmed_message() {
    let mut seeds_that_paged = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let args = QueueArgs {
            dead_letter_exchange: Some("dlx".into()),
            message_ttl: (rng.below(2) == 0).then_some(5_000),
            max_priority: (rng.below(2) == 0).then_some(3),
            max_length: (rng.below(3) == 0).then_some(12_000),
            ..QueueArgs::default()
        };
        let mut sim = Sim::new(args.clone(), Storage::Durable);
        let c = TestConsumer::new(64);
        let mut consuming = false;
        let mut crashed = false;
        let mut published: Vec<u64> = Vec::new();
        let mut next = 0u64;
        let mut paged = false;
        for step in 0..4_000 {
            paged |= sim.m.ready.unloaded > 0;
            match rng.below(1000) {
                0..=549 => {
                    let persistent = rng.below(4) != 0;
                    let priority = args.max_priority.map(|_| rng.below(4) as u8);
                    // 1 KiB bodies: the backlog passes the 8 MiB window.
                    for _ in 0..8 {
                        sim.publish(message(next, persistent, priority), rng.below(5) == 0);
                        published.push(next);
                        next += 1;
                    }
                }
                550..=699 => {
                    // The store answers part of what it was asked.
                    for _ in 0..rng.below(40) {
                        sim.serve_one();
                    }
                }
                // The consumer comes late, so a backlog builds up first.
                700..=719 if !consuming && step > 1_500 => {
                    sim.consume(c.clone());
                    consuming = true;
                }
                700..=849 => {
                    // Ack (mostly), reject or requeue what was delivered.
                    let batch = std::mem::take(&mut sim.delivered);
                    sim.give_room(&c, c.room.get() + batch.len() as u32);
                    match rng.below(6) {
                        0..=3 => {
                            sim.acked_log.extend(batch.iter().map(index));
                            let settled = batch.iter().map(|m| (m.seq, m.stored)).collect();
                            sim.apply(Command::Ack { settled })
                        }
                        4 => sim.apply(Command::Reject { messages: batch }),
                        _ => sim.apply(Command::Requeue { messages: batch }),
                    };
                    sim.apply(Command::Kick);
                }
                850..=998 => sim.tick(rng.below(30)),
                999 => {
                    // kill -9: only what the store holds survives; deliveries in
                    // flight and unserved requests are gone.
                    crashed = true;
                    sim.delivered.clear();
                    sim.give_room(&c, 64);
                    sim.crash_and_restore(args.clone());
                    consuming = false;
                }
                _ => {}
            }
        }
        // Drain: serve everything, consume and ack until the queue is empty.
        if !consuming {
            sim.consume(c.clone());
        }
        for _ in 0..100_000 {
            sim.serve();
            sim.tick(100);
            if sim.delivered.is_empty() && sim.m.message_count() == 0 && sim.store.queue.is_empty()
            {
                break;
            }
            sim.ack_all(&c);
        }
        assert_eq!(sim.m.message_count(), 0, "seed {seed}: drained");
        let mut seen: Vec<u64> = sim.acked_log.clone();
        seen.extend(sim.dead.iter().map(index));
        seen.sort_unstable();
        seen.dedup();
        let lost: Vec<u64> = sim
            .confirmed
            .iter()
            .copied()
            .filter(|i| seen.binary_search(i).is_err())
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: confirmed messages lost: {lost:?}"
        );
        if !crashed {
            let missing: Vec<u64> = published
                .iter()
                .copied()
                .filter(|i| seen.binary_search(i).is_err())
                .collect();
            assert!(
                missing.is_empty(),
                "seed {seed}: lost without a crash: {missing:?}"
            );
        }
        assert_eq!(
            sim.m.unreadable, 0,
            "seed {seed}: a record could not be read"
        );
        // Deterministic and serialisable: the logged commands, applied to a
        // fresh machine, give the same outcomes and effects, crashes included.
        let replayed = sim.replay();
        assert_eq!(
            replayed.len(),
            sim.trace.len(),
            "seed {seed}: replay length"
        );
        if let Some(i) = (0..replayed.len()).find(|&i| replayed[i] != sim.trace[i]) {
            panic!(
                "seed {seed}: replay differs at command {i}:\n  run:    {}\n  replay: {}",
                sim.trace[i], replayed[i]
            );
        }
        seeds_that_paged += usize::from(paged);
    }
    // The workload must reach the paths it is here for (bodies only on disk).
    assert!(seeds_that_paged >= 5, "only {seeds_that_paged} seeds paged");
}

#[test]
fn a_failed_read_is_retried_later_not_dropped() {
    let args = QueueArgs {
        message_ttl: Some(1_000),
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args.clone(), Storage::Durable);
    let n = 10 * 1024;
    for i in 0..n {
        sim.publish(message(i, true, None), false);
    }
    sim.serve();
    sim.crash_and_restore(args);
    sim.store.unreadable = true;
    sim.tick(2_000); // everything expires; the paged ones need a read
    sim.serve();
    assert_eq!(sim.m.unreadable, 0, "an I/O error is not a lost record");
    let before = sim.dead.len() as u64;
    assert!(before < n, "the paged ones wait for the disk");
    sim.store.unreadable = false;
    sim.tick(500); // before the retry pause is over: nothing yet
    sim.serve();
    assert_eq!(sim.dead.len() as u64, before);
    sim.tick(1_000);
    sim.serve();
    assert_eq!(
        sim.dead.len() as u64,
        n,
        "every message dead-lettered once the disk reads"
    );
}

#[test]
fn a_truncated_or_corrupt_command_is_refused_not_a_panic() {
    let codec = TestCodec::default();
    let queued = QueuedMessage {
        seq: 7,
        message: message(7, true, Some(2)),
        redelivered: true,
        expires_at: Some(Time(42)),
        stored: Stored::Durable,
        delivery_count: Some(3),
    };
    let commands: Vec<Command<TestConsumer>> = vec![
        Command::Publish {
            message: message(1, true, None),
            spill: false,
        },
        Command::Requeue {
            messages: vec![queued.clone()],
        },
        Command::Ack {
            settled: vec![(3, Stored::Spilled)],
        },
        Command::Consume {
            consumer: TestConsumer::new(5),
        },
        Command::Loaded {
            records: vec![
                (1, ReadBack::Body(message(1, false, None))),
                (2, ReadBack::Missing),
            ],
            page_in: true,
        },
        Command::Restore {
            seq: 9,
            message: message(9, true, None),
            redelivered: false,
        },
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for command in &commands {
        let mut bytes = Vec::new();
        command.encode(&codec, &mut bytes);
        let mut again = Vec::new();
        let decoded = Command::decode(&Bytes::from(bytes.clone()), &mut TestCodec::default())
            .expect("the whole encoding decodes");
        decoded.encode(&codec, &mut again);
        assert_eq!(bytes, again, "{command:?} round-trips");
        for cut in 0..bytes.len() {
            let prefix = Bytes::copy_from_slice(&bytes[..cut]);
            assert!(
                Command::decode(&prefix, &mut TestCodec::default()).is_none(),
                "{command:?} cut at {cut} is refused"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Command::decode(&Bytes::from(longer), &mut TestCodec::default()).is_none());
        for _ in 0..200 {
            let mut corrupt = bytes.clone();
            let i = rng.below(corrupt.len() as u64) as usize;
            corrupt[i] ^= 1 << rng.below(8);
            // Any answer but a panic (or a huge allocation) will do.
            let _ = Command::decode(&Bytes::from(corrupt), &mut TestCodec::default());
        }
    }
}

#[test]
fn a_quorum_queue_counts_returns_and_dead_letters_past_its_delivery_limit() {
    let args = QueueArgs {
        queue_type: super::args::QueueType::Quorum,
        delivery_limit: Some(1),
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArgs::default()
    };
    let mut sim = Sim::new(args, Storage::Durable);
    sim.publish(message(0, false, None), false);
    sim.serve();
    assert_eq!(
        sim.store.records.len(),
        1,
        "a transient message is kept on disk"
    );
    let mut counts = Vec::new();
    for _ in 0..6 {
        let m = match sim.get(false) {
            Got::Message(m, _) => m,
            // Its delivery mark is being written.
            Got::Wait => {
                sim.serve();
                continue;
            }
            Got::Empty => break,
        };
        counts.push(m.delivery_count);
        sim.apply(Command::Requeue { messages: vec![m] });
    }
    assert_eq!(counts, [Some(0), Some(1)]);
    assert_eq!(sim.dead.len(), 1, "the second return passes the limit of 1");
    assert_eq!(sim.m.message_count(), 0);
}
