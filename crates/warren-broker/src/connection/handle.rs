//! What other tasks hold of a connection: its inbox and its flow-control counters.
//!
//! Queues deliver (through [`Outlet`]) by pushing [`ConnEvent::Deliver`] into the owning connection's
//! inbox; the connection assigns delivery tags and encodes frames. Two counters keep
//! a consumer that does not read its socket from making the broker buffer without
//! bound: bytes queued in the inbox and bytes handed to the socket writer. Queues stop
//! delivering to a connection above [`HIGH_WATER`]; the writer wakes them again below
//! [`LOW_WATER`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

pub use crate::queue::ConnectionId;
use crate::queue::{Handover, Outlet};

/// Above this many pending outbound bytes a connection gets no more deliveries.
pub const HIGH_WATER: usize = 1 << 20;
/// Deliveries resume once pending bytes fall below this.
pub const LOW_WATER: usize = HIGH_WATER / 4;
/// The connection stops reading its socket while this much output waits to be written.
pub const READ_STOP: usize = HIGH_WATER * 4;

/// Something another task asks a connection to do.
#[derive(Debug)]
pub enum ConnEvent {
    /// A queue hands a message to one of this connection's consumers.
    Deliver(Handover),
    /// The queue behind a consumer went away (server-sent basic.cancel).
    ConsumerCancelled {
        channel: u16,
        consumer_tag: Arc<str>,
    },
    /// A reply for this connection's direct reply-to consumer on `channel`.
    DirectReply {
        channel: u16,
        key: u64,
        message: Arc<crate::message::Message>,
    },
    /// The writer drained below the low-water mark: ask starved queues again.
    Drained,
    /// The store's group commit covering publishes up to confirm sequence
    /// number `upto` on a channel finished (`ok`: they are on disk).
    Persisted {
        channel: u16,
        epoch: u64,
        upto: u64,
        ok: bool,
    },
    /// The group commit behind a tx.commit finished.
    TxCommitted { channel: u16, epoch: u64, ok: bool },
    /// What this connection was paused for (flow control) has caught up.
    FlowResume,
    /// The queue of a waiting `basic.get` read its head from disk: ask again.
    GetReady { channel: u16 },
    /// A resource alarm was raised or cleared (see `Broker::alarms`).
    Alarm,
    /// Close the connection (broker shutdown or an operator's request).
    ForceClose { code: u16, text: String },
}

/// The shared half of a connection.
#[derive(Debug)]
pub struct ConnHandle {
    pub id: ConnectionId,
    inbox: mpsc::UnboundedSender<ConnEvent>,
    /// Bytes of deliveries sitting in the inbox.
    inbox_bytes: AtomicUsize,
    /// Bytes handed to the writer and not yet written to the socket.
    writer_bytes: AtomicUsize,
    /// A queue skipped this connection for lack of room: wake queues when drained.
    starved: AtomicBool,
    /// Who opened the connection and on which vhost (set at connection.open):
    /// operators close connections by user or vhost.
    pub identity: OnceLock<Identity>,
}

/// The user and vhost of an open connection.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub vhost: String,
}

impl ConnHandle {
    pub fn new(id: ConnectionId) -> (Arc<ConnHandle>, mpsc::UnboundedReceiver<ConnEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(ConnHandle {
                id,
                inbox: tx,
                inbox_bytes: AtomicUsize::new(0),
                writer_bytes: AtomicUsize::new(0),
                starved: AtomicBool::new(false),
                identity: OnceLock::new(),
            }),
            rx,
        )
    }

    /// Whether a queue may hand this connection another delivery now.
    pub fn has_room(&self) -> bool {
        let pending =
            self.inbox_bytes.load(Ordering::Relaxed) + self.writer_bytes.load(Ordering::Relaxed);
        if pending < HIGH_WATER {
            true
        } else {
            self.starved.store(true, Ordering::Relaxed);
            false
        }
    }

    /// Queue a delivery. Returns the event back if the connection is gone.
    pub fn deliver(&self, ev: ConnEvent, size: usize) -> Result<(), ConnEvent> {
        self.inbox_bytes.fetch_add(size, Ordering::Relaxed);
        self.inbox.send(ev).map_err(|e| {
            self.inbox_bytes.fetch_sub(size, Ordering::Relaxed);
            e.0
        })
    }

    /// Send a non-delivery event; silently dropped if the connection is gone.
    pub fn notify(&self, ev: ConnEvent) {
        let _ = self.inbox.send(ev);
    }

    /// The connection took a delivery of `size` bytes out of its inbox.
    pub fn delivery_taken(&self, size: usize) {
        self.inbox_bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// `size` bytes were handed to the writer.
    pub fn queued_for_write(&self, size: usize) {
        self.writer_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// The writer wrote `size` bytes; wakes starved queues when below the
    /// low-water mark, and the reader when it may read again.
    pub fn written(&self, size: usize) {
        let before = self.writer_bytes.fetch_sub(size, Ordering::Relaxed);
        let after = before.saturating_sub(size);
        let now = after + self.inbox_bytes.load(Ordering::Relaxed);
        let resume_reading = before >= READ_STOP && after < READ_STOP;
        if (now < LOW_WATER && self.starved.swap(false, Ordering::Relaxed)) || resume_reading {
            let _ = self.inbox.send(ConnEvent::Drained);
        }
    }

    /// Bytes waiting for the socket writer.
    pub fn writer_backlog(&self) -> usize {
        self.writer_bytes.load(Ordering::Relaxed)
    }
}

impl Outlet for ConnHandle {
    fn connection_id(&self) -> ConnectionId {
        self.id
    }

    fn has_room_for_delivery(&self) -> bool {
        self.has_room()
    }

    fn hand_over(&self, delivery: Handover) -> Result<(), Handover> {
        let size = delivery.message.message.wire_size();
        match self.deliver(ConnEvent::Deliver(delivery), size) {
            Ok(()) => Ok(()),
            Err(ConnEvent::Deliver(delivery)) => Err(delivery),
            // `deliver` gives back the event it was given.
            Err(_) => Ok(()),
        }
    }

    fn consumer_cancelled(&self, channel: u16, consumer_tag: Arc<str>) {
        self.notify(ConnEvent::ConsumerCancelled {
            channel,
            consumer_tag,
        });
    }

    fn get_ready(&self, channel: u16) {
        self.notify(ConnEvent::GetReady { channel });
    }
}
