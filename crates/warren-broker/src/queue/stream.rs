//! Streams over AMQP 0-9-1 (`x-queue-type: stream`), as RabbitMQ 3.10.8
//! serves them: publishes are appended to an append-only log
//! (`warren_store::stream_log`, written by the storage thread: one fsync per
//! batch before the confirm), and every consumer reads from its own offset.
//! Acks only give prefetch credit back; nothing is removed but by retention.
//!
//! Each consumer has a small reader task: it reads batches off the log on a
//! blocking thread (never on an async worker), hands deliveries to the
//! consumer's connection while it has credit, and sleeps until the log grows
//! or credit comes back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_store::stream_log::{Entry, SharedLog};
use warren_store::{Op, Store};

use super::consumers::Slot;
use super::outlet::Handover;
use super::{ConsumerKey, Queue, QueuedMessage, Stored};
use crate::error::AmqpError;
use crate::message::Message;

/// Records read from the log at a time, per consumer.
const READ_RECORDS: usize = 256;
const READ_BYTES: u64 = 1 << 20;

/// Where a consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    First,
    Last,
    Next,
    Offset(i64),
    /// Milliseconds since the Unix epoch: the first record at or after it.
    Timestamp(i64),
}

impl StreamStart {
    /// Read `x-stream-offset`; `None` if it is not a valid offset spec.
    pub fn parse(v: &AMQPValue) -> Option<StreamStart> {
        let text = match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            AMQPValue::Timestamp(secs) => {
                return Some(StreamStart::Timestamp((*secs as i64).saturating_mul(1000)))
            }
            other => return super::args::integer(other).map(|n| StreamStart::Offset(n as i64)),
        };
        match text.as_str() {
            "first" => Some(StreamStart::First),
            "last" => Some(StreamStart::Last),
            "next" => Some(StreamStart::Next),
            interval => {
                let ago = super::args::max_age_ms(interval)?;
                Some(StreamStart::Timestamp(
                    crate::delayed::now_ms() as i64 - ago as i64,
                ))
            }
        }
    }
}

/// A stream consumer's reader.
#[derive(Debug)]
struct Reader {
    key: ConsumerKey,
    consumer: Arc<super::Consumer>,
    wake: Arc<Notify>,
    cancelled: Arc<AtomicBool>,
}

/// The stream half of a queue.
#[derive(Debug)]
pub struct StreamState {
    pub log: Arc<SharedLog>,
    readers: Mutex<Vec<Reader>>,
    deleted: AtomicBool,
}

impl StreamState {
    pub fn new(log: SharedLog) -> Arc<StreamState> {
        let state = Arc::new(StreamState {
            log: Arc::new(log),
            readers: Mutex::new(Vec::new()),
            deleted: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&state);
        state.log.on_append(move || {
            if let Some(s) = weak.upgrade() {
                s.wake_all();
            }
        });
        state
    }

    /// Wake every reader (the log grew, or credit came back).
    pub fn wake_all(&self) {
        for r in self.readers.lock().iter() {
            r.wake.notify_one();
        }
    }

    pub fn consumer_count(&self) -> u32 {
        self.readers.lock().len() as u32
    }

    /// Append a message (through the storage thread, so that the publisher's
    /// confirm waits for the fsync).
    pub fn publish(&self, store: &Store, message: Arc<Message>) {
        store.submit(Op::AppendStream {
            log: self.log.clone(),
            timestamp_ms: crate::delayed::now_ms() as i64,
            message,
        });
    }

    fn start_offset(&self, start: StreamStart) -> Result<u64, AmqpError> {
        let (first, next) = (self.log.first_offset(), self.log.next_offset());
        Ok(match start {
            StreamStart::First => first,
            StreamStart::Next => next,
            StreamStart::Last => next.saturating_sub(1).max(first),
            StreamStart::Offset(n) => (n.max(0) as u64).clamp(first, next),
            StreamStart::Timestamp(ms) => self
                .log
                .offset_at(ms)
                .map_err(|e| AmqpError::internal_error(format!("cannot read the stream: {e}")))?,
        })
    }

    /// Add a consumer that reads from `start`; its reader task runs until it
    /// is cancelled, the stream is deleted or its connection goes.
    pub fn add(
        &self,
        queue: &Arc<Queue>,
        consumer: Arc<super::Consumer>,
        start: StreamStart,
    ) -> Result<(), AmqpError> {
        let cursor = self.start_offset(start)?;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(AmqpError::internal_error(
                "streams need the broker's runtime",
            ));
        };
        let wake = Arc::new(Notify::new());
        let cancelled = Arc::new(AtomicBool::new(false));
        self.readers.lock().push(Reader {
            key: ConsumerKey {
                conn: consumer.conn.connection_id(),
                channel: consumer.channel,
                tag: consumer.tag.to_string(),
            },
            consumer: consumer.clone(),
            wake: wake.clone(),
            cancelled: cancelled.clone(),
        });
        runtime.spawn(feed(
            queue.clone(),
            self.log.clone(),
            consumer,
            cursor,
            wake,
            cancelled,
        ));
        Ok(())
    }

    /// Stop the readers `is` picks; returns them.
    fn take(&self, is: impl Fn(&ConsumerKey) -> bool) -> Vec<Reader> {
        let mut readers = self.readers.lock();
        let (gone, kept): (Vec<Reader>, Vec<Reader>) = std::mem::take(&mut *readers)
            .into_iter()
            .partition(|r| is(&r.key));
        *readers = kept;
        drop(readers);
        for r in &gone {
            r.cancelled.store(true, Ordering::Relaxed);
            r.wake.notify_one();
        }
        gone
    }

    /// Stop the readers `is` picks; returns how many.
    pub fn remove(&self, is: impl Fn(&ConsumerKey) -> bool) -> usize {
        self.take(is).len()
    }

    /// The stream is deleted: stop every reader and tell its consumer (a
    /// server-sent `basic.cancel`, as for any deleted queue); the storage
    /// thread removes the log after what was queued for it.
    pub fn delete(&self, store: Option<&Store>) {
        self.deleted.store(true, Ordering::Relaxed);
        for r in self.take(|_| true) {
            r.consumer
                .conn
                .consumer_cancelled(r.consumer.channel, r.consumer.tag.clone());
        }
        if let Some(store) = store {
            store.submit(Op::DropStream {
                log: self.log.clone(),
            });
        }
    }
}

/// A record as a delivery: the message as published, with the
/// `x-stream-offset` header RabbitMQ adds.
fn delivery_of(entry: &Entry) -> Option<QueuedMessage> {
    let record = warren_store::layout::decode_record(&entry.data)?;
    let message = super::records::message_from_record(record, &mut None)?;
    let offset = i64::try_from(entry.offset).unwrap_or(i64::MAX);
    let header = message.header_with("x-stream-offset", AMQPValue::LongLongInt(offset))?;
    let header = warren_codec::ContentHeader::parse(Bytes::from(header)).ok()?;
    let message = Message::new(
        message.address.clone(),
        header,
        message.content.body_bytes(),
    );
    Some(QueuedMessage {
        seq: entry.offset,
        message: Arc::new(message),
        redelivered: false,
        expires_at: None,
        stored: Stored::No,
        delivery_count: None,
    })
}

/// One consumer's reader task.
async fn feed(
    queue: Arc<Queue>,
    log: Arc<SharedLog>,
    consumer: Arc<super::Consumer>,
    mut cursor: u64,
    wake: Arc<Notify>,
    cancelled: Arc<AtomicBool>,
) {
    let mut ready: VecDeque<Entry> = VecDeque::new();
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return;
        }
        if ready.is_empty() && cursor < log.next_offset() {
            let reader = log.clone();
            let from = cursor;
            match tokio::task::spawn_blocking(move || reader.read(from, READ_RECORDS, READ_BYTES))
                .await
            {
                Ok(Ok(entries)) => {
                    // Retention may have dropped what was next: go on from
                    // the first record still there.
                    if let Some(e) = entries.last() {
                        cursor = e.offset + 1;
                    }
                    ready.extend(entries);
                }
                Ok(Err(e)) => {
                    tracing::error!(queue = %queue.name, "cannot read the stream: {e}; the consumer waits");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return,
            }
        }
        let mut progressed = false;
        while let Some(entry) = ready.front() {
            if cancelled.load(Ordering::Relaxed) || !consumer.try_reserve() {
                break;
            }
            let Some(message) = delivery_of(entry) else {
                tracing::warn!(queue = %queue.name, offset = entry.offset, "a stream record cannot be decoded; it is skipped");
                consumer.unreserve();
                ready.pop_front();
                continue;
            };
            ready.pop_front();
            let handover = Handover {
                channel: consumer.channel,
                consumer_tag: consumer.tag.clone(),
                no_ack: false,
                queue: queue.clone(),
                message,
            };
            if consumer.conn.hand_over(handover).is_err() {
                return; // the connection is gone
            }
            progressed = true;
        }
        let caught_up = ready.is_empty() && cursor >= log.next_offset();
        if !progressed || caught_up {
            wake.notified().await;
        }
    }
}
