//! The queue machine's inputs as values, with a byte encoding.
//!
//! Each [`QueueMachine`] method is one command; [`Command`] is the same input
//! as data, so that a sequence of commands can be logged, sent elsewhere and
//! applied again with the same result: the machine reads no clock (time is an
//! argument of [`QueueMachine::apply`]) and no randomness. The one input that
//! is not a command is a consumer's room for another delivery
//! ([`Slot::try_reserve`]): a log that is replayed must record the room it
//! gave, as `machine_tests.rs` does.

use std::sync::Arc;

use bytes::Bytes;
use warren_codec::ContentHeader;

use super::consumers::Slot;
use super::effects::{Effects, ReadBack};
use super::machine::{ConsumerRefused, ConsumerRemoved, Enqueued, Got, QueueMachine, Tick};
use super::ready::{QueuedMessage, Stored, Time};
use crate::message::{Address, Message};

/// One input to a queue machine.
#[derive(Debug)]
pub enum Command<C: Slot> {
    Publish {
        message: Arc<Message>,
        /// Memory is short: transient messages may be paged out too.
        spill: bool,
    },
    Requeue {
        messages: Vec<QueuedMessage>,
    },
    ReturnUndelivered {
        message: QueuedMessage,
    },
    PutBack {
        message: QueuedMessage,
    },
    /// The `(seq, stored)` of messages a consumer acknowledged.
    Ack {
        settled: Vec<(u64, Stored)>,
    },
    Reject {
        messages: Vec<QueuedMessage>,
    },
    Get {
        no_ack: bool,
    },
    Touch,
    Kick,
    Consume {
        consumer: C,
    },
    Cancel {
        key: C::Key,
    },
    Purge,
    Delete,
    Counts,
    Tick,
    /// A [`Sync`](super::effects::StorageOp::Sync) completed.
    Written {
        upto: u64,
        ok: bool,
    },
    /// A [`Read`](super::effects::StorageOp::Read) completed.
    Loaded {
        records: Vec<(u64, ReadBack)>,
        page_in: bool,
    },
    /// A [`Mark`](super::effects::StorageOp::Mark) completed.
    Marked {
        upto: u64,
        ok: bool,
    },
    /// A message read from the store at start-up.
    Restore {
        seq: u64,
        message: Arc<Message>,
        redelivered: bool,
    },
}

/// What a command answered (besides its effects).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Enqueued(Enqueued),
    /// `basic.get`: the seq of the message taken and how many remain.
    Got(Option<(u64, u32)>),
    GetWait,
    Consumed(Result<(), ConsumerRefused>),
    Cancelled(ConsumerRemoved),
    Count(u32),
    Counts(u32, u32),
    Tick(Tick),
}

impl<C: Slot> QueueMachine<C> {
    /// Apply one command at time `now`. A message taken by `basic.get` is
    /// returned beside the outcome.
    pub fn apply(
        &mut self,
        command: Command<C>,
        now: Time,
        out: &mut Effects<C>,
    ) -> (Outcome, Option<QueuedMessage>) {
        let outcome = match command {
            Command::Publish { message, spill } => {
                Outcome::Enqueued(self.publish(message, now, spill, out))
            }
            Command::Requeue { messages } => {
                self.requeue(messages, now, out);
                Outcome::Done
            }
            Command::ReturnUndelivered { message } => {
                self.return_undelivered(message, now, out);
                Outcome::Done
            }
            Command::PutBack { message } => {
                self.put_back(message);
                Outcome::Done
            }
            Command::Ack { settled } => {
                self.ack(settled, out);
                Outcome::Done
            }
            Command::Reject { messages } => {
                self.reject(messages, out);
                Outcome::Done
            }
            Command::Get { no_ack } => {
                return match self.get(no_ack, now, out) {
                    Got::Message(m, left) => (Outcome::Got(Some((m.seq, left))), Some(m)),
                    Got::Empty => (Outcome::Got(None), None),
                    Got::Wait => (Outcome::GetWait, None),
                };
            }
            Command::Touch => {
                self.touch(now, out);
                Outcome::Done
            }
            Command::Kick => {
                self.kick(now, out);
                Outcome::Done
            }
            Command::Consume { consumer } => {
                Outcome::Consumed(self.add_consumer(consumer, now, out))
            }
            Command::Cancel { key } => Outcome::Cancelled(self.cancel(&key, now, out)),
            Command::Purge => Outcome::Count(self.purge(out)),
            Command::Delete => Outcome::Count(self.delete(out)),
            Command::Counts => {
                let (messages, consumers) = self.counts(now, out);
                Outcome::Counts(messages, consumers)
            }
            Command::Tick => Outcome::Tick(self.tick(now, out)),
            Command::Written { upto, ok } => {
                self.written(upto, ok, now, out);
                Outcome::Done
            }
            Command::Loaded { records, page_in } => {
                self.loaded(records, page_in, now, out);
                Outcome::Done
            }
            Command::Marked { upto, ok } => {
                self.marked(upto, ok, now, out);
                Outcome::Done
            }
            Command::Restore {
                seq,
                message,
                redelivered,
            } => {
                self.restore(seq, message, redelivered, now);
                Outcome::Done
            }
        };
        (outcome, None)
    }
}

/// How consumers and their keys are written: the machine knows consumers
/// only through [`Slot`], so whoever logs commands says how to name them.
pub trait ConsumerCodec<C: Slot> {
    fn put(&self, consumer: &C, out: &mut Vec<u8>);
    fn take(&mut self, r: &mut Reader<'_>) -> Option<C>;
    fn put_key(&self, key: &C::Key, out: &mut Vec<u8>);
    fn take_key(&mut self, r: &mut Reader<'_>) -> Option<C::Key>;
}

/// Reads the encoding back; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a Bytes) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A length-prefixed slice, shared with the input (no copy).
    pub fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        let start = self.pos;
        self.take(n)?;
        Some(self.data.slice(start..start + n))
    }

    /// A vector's length, bounded by what is left to read (each element takes
    /// at least one byte), so that a corrupt count cannot allocate much.
    fn count(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= self.data.len() - self.pos).then_some(n)
    }

    fn done(&self) -> bool {
        self.pos == self.data.len()
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_message(out: &mut Vec<u8>, m: &Message) {
    let mut record = Vec::new();
    warren_store::layout::encode_record(
        &mut record,
        m.exchange(),
        m.routing_key(),
        m.cc(),
        m.content.header(),
        m.content.body(),
    );
    put_bytes(out, &record);
}

fn take_message(r: &mut Reader<'_>) -> Option<Arc<Message>> {
    let record = warren_store::layout::decode_record(&r.bytes()?)?;
    let header = ContentHeader::parse(record.header).ok()?;
    let address = Address::new(record.exchange, record.routing_key, record.cc);
    Some(Arc::new(Message::new(address, header, record.body)))
}

fn stored_code(s: Stored) -> u8 {
    match s {
        Stored::No => 0,
        Stored::Durable => 1,
        Stored::Spilled => 2,
    }
}

fn take_stored(r: &mut Reader<'_>) -> Option<Stored> {
    match r.u8()? {
        0 => Some(Stored::No),
        1 => Some(Stored::Durable),
        2 => Some(Stored::Spilled),
        _ => None,
    }
}

fn put_queued(out: &mut Vec<u8>, m: &QueuedMessage) {
    put_u64(out, m.seq);
    out.push(m.redelivered as u8);
    match m.expires_at {
        Some(t) => {
            out.push(1);
            put_u64(out, t.0);
        }
        None => out.push(0),
    }
    out.push(stored_code(m.stored));
    match m.delivery_count {
        Some(n) => {
            out.push(1);
            put_u32(out, n);
        }
        None => out.push(0),
    }
    put_message(out, &m.message);
}

fn take_queued(r: &mut Reader<'_>) -> Option<QueuedMessage> {
    let seq = r.u64()?;
    let redelivered = r.bool()?;
    let expires_at = if r.bool()? {
        Some(Time(r.u64()?))
    } else {
        None
    };
    let stored = take_stored(r)?;
    let delivery_count = if r.bool()? { Some(r.u32()?) } else { None };
    let message = take_message(r)?;
    Some(QueuedMessage {
        seq,
        message,
        redelivered,
        expires_at,
        stored,
        delivery_count,
    })
}

fn put_queued_list(out: &mut Vec<u8>, list: &[QueuedMessage]) {
    put_u32(out, list.len() as u32);
    list.iter().for_each(|m| put_queued(out, m));
}

fn take_queued_list(r: &mut Reader<'_>) -> Option<Vec<QueuedMessage>> {
    let n = r.count()?;
    (0..n).map(|_| take_queued(r)).collect()
}

impl<C: Slot> Command<C> {
    /// Append this command's encoding to `out`.
    pub fn encode(&self, consumers: &impl ConsumerCodec<C>, out: &mut Vec<u8>) {
        match self {
            Command::Publish { message, spill } => {
                out.push(0);
                out.push(*spill as u8);
                put_message(out, message);
            }
            Command::Requeue { messages } => {
                out.push(1);
                put_queued_list(out, messages);
            }
            Command::ReturnUndelivered { message } => {
                out.push(2);
                put_queued(out, message);
            }
            Command::PutBack { message } => {
                out.push(3);
                put_queued(out, message);
            }
            Command::Ack { settled } => {
                out.push(4);
                put_u32(out, settled.len() as u32);
                for (seq, stored) in settled {
                    put_u64(out, *seq);
                    out.push(stored_code(*stored));
                }
            }
            Command::Reject { messages } => {
                out.push(5);
                put_queued_list(out, messages);
            }
            Command::Get { no_ack } => {
                out.push(6);
                out.push(*no_ack as u8);
            }
            Command::Touch => out.push(7),
            Command::Kick => out.push(8),
            Command::Consume { consumer } => {
                out.push(9);
                consumers.put(consumer, out);
            }
            Command::Cancel { key } => {
                out.push(10);
                consumers.put_key(key, out);
            }
            Command::Purge => out.push(11),
            Command::Delete => out.push(12),
            Command::Counts => out.push(13),
            Command::Tick => out.push(14),
            Command::Written { upto, ok } => {
                out.push(15);
                put_u64(out, *upto);
                out.push(*ok as u8);
            }
            Command::Loaded { records, page_in } => {
                out.push(16);
                out.push(*page_in as u8);
                put_u32(out, records.len() as u32);
                for (seq, r) in records {
                    put_u64(out, *seq);
                    match r {
                        ReadBack::Body(m) => {
                            out.push(0);
                            put_message(out, m);
                        }
                        ReadBack::Missing => out.push(1),
                        ReadBack::Unavailable => out.push(2),
                    }
                }
            }
            Command::Marked { upto, ok } => {
                out.push(17);
                put_u64(out, *upto);
                out.push(*ok as u8);
            }
            Command::Restore {
                seq,
                message,
                redelivered,
            } => {
                out.push(18);
                put_u64(out, *seq);
                out.push(*redelivered as u8);
                put_message(out, message);
            }
        }
    }

    /// Decode one command that fills all of `data`; `None` if it is
    /// truncated, has bytes left over, or is malformed.
    pub fn decode(data: &Bytes, consumers: &mut impl ConsumerCodec<C>) -> Option<Command<C>> {
        let r = &mut Reader::new(data);
        let command = match r.u8()? {
            0 => Command::Publish {
                spill: r.bool()?,
                message: take_message(r)?,
            },
            1 => Command::Requeue {
                messages: take_queued_list(r)?,
            },
            2 => Command::ReturnUndelivered {
                message: take_queued(r)?,
            },
            3 => Command::PutBack {
                message: take_queued(r)?,
            },
            4 => {
                let n = r.count()?;
                let settled = (0..n)
                    .map(|_| Some((r.u64()?, take_stored(r)?)))
                    .collect::<Option<Vec<_>>>()?;
                Command::Ack { settled }
            }
            5 => Command::Reject {
                messages: take_queued_list(r)?,
            },
            6 => Command::Get { no_ack: r.bool()? },
            7 => Command::Touch,
            8 => Command::Kick,
            9 => Command::Consume {
                consumer: consumers.take(r)?,
            },
            10 => Command::Cancel {
                key: consumers.take_key(r)?,
            },
            11 => Command::Purge,
            12 => Command::Delete,
            13 => Command::Counts,
            14 => Command::Tick,
            15 => Command::Written {
                upto: r.u64()?,
                ok: r.bool()?,
            },
            16 => {
                let page_in = r.bool()?;
                let n = r.count()?;
                let records = (0..n)
                    .map(|_| {
                        let seq = r.u64()?;
                        let back = match r.u8()? {
                            0 => ReadBack::Body(take_message(r)?),
                            1 => ReadBack::Missing,
                            2 => ReadBack::Unavailable,
                            _ => return None,
                        };
                        Some((seq, back))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Command::Loaded { records, page_in }
            }
            17 => Command::Marked {
                upto: r.u64()?,
                ok: r.bool()?,
            },
            18 => Command::Restore {
                seq: r.u64()?,
                redelivered: r.bool()?,
                message: take_message(r)?,
            },
            _ => return None,
        };
        r.done().then_some(command)
    }
}
