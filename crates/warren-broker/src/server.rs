//! The tokio driver: accepts TCP connections and runs each one's state machine.
//!
//! Per connection there are two tasks:
//! - the *connection task* owns the [`Connection`] state machine; it reads the
//!   socket, drains the connection's inbox (deliveries from queues) and turns
//!   timers into calls, then hands all output produced by one wake-up to the writer
//!   in one piece;
//! - the *writer task* writes those pieces to the socket, so a client that reads
//!   slowly never stalls the connection task, and counts what is still pending
//!   for back-pressure.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::connection::{ConnHandle, Connection};

/// Events handled per wake-up before output is flushed (fairness between the
/// inbox and the socket).
const INBOX_BUDGET: usize = 512;
const READ_CHUNK: usize = 64 * 1024;
/// A read at least this big counts as a busy turn (see the yield in `run_connection`).
const YIELD_AFTER_BYTES: usize = 16 * 1024;

/// Listening sockets bound for a broker, not yet accepting.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<TcpListener>,
}

/// A running server: its addresses, and how to stop it.
pub struct ServerHandle {
    pub broker: Arc<Broker>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Bind every address (port 0 picks a free one).
    pub async fn bind(broker: Arc<Broker>, addrs: &[SocketAddr]) -> io::Result<Server> {
        let mut listeners = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(a).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {a}: {e}; is another broker already using this port? Choose another with --port"),
                )
            })?;
            listeners.push(l);
        }
        Ok(Server { broker, listeners })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Start accepting connections.
    pub fn start(self) -> ServerHandle {
        let addrs = self.local_addrs();
        let (tx, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for l in self.listeners {
            tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening for AMQP 0-9-1 connections");
            tasks.spawn(accept_loop(self.broker.clone(), l, rx.clone()));
        }
        ServerHandle {
            broker: self.broker,
            addrs,
            shutdown: tx,
            tasks,
        }
    }
}

impl ServerHandle {
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stop accepting, close every connection with 320 CONNECTION_FORCED and wait
    /// (up to `grace`) for them to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // RabbitMQ's text when the node (or its rabbit app) stops
        self.broker.close_all(
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
        );
        let deadline = Instant::now() + grace;
        while self.broker.connection_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(run_connection(broker.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn run_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tracing::info!(peer = %peer, "connection accepted");
    let (handle, mut inbox) = broker.register_connection();
    let (mut reader, writer) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(write_loop(writer, out_rx, handle.clone()));
    let mut conn = Connection::new(
        broker.clone(),
        handle.clone(),
        peer,
        Instant::now().into_std(),
    );
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let deadline = conn.poll_timeout();
        let sleep_until = deadline
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(READ_CHUNK);
        }
        // Work done in this turn; a busy turn yields to other tasks afterwards.
        let mut busy = false;
        tokio::select! {
            read = reader.read_buf(&mut rbuf), if conn.wants_read() => match read {
                Ok(0) | Err(_) => {
                    if conn.close_reason().is_none() {
                        tracing::debug!(conn = conn.id(), "client closed the socket");
                    }
                    conn.cleanup();
                    break;
                }
                Ok(n) => {
                    busy = n >= YIELD_AFTER_BYTES;
                    conn.handle_input(&mut rbuf, Instant::now().into_std());
                }
            },
            ev = inbox.recv() => {
                let now = Instant::now().into_std();
                if let Some(ev) = ev {
                    conn.handle_event(ev, now);
                    let mut handled = 1;
                    while handled < INBOX_BUDGET {
                        match inbox.try_recv() {
                            Ok(ev) => conn.handle_event(ev, now),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                    busy = handled >= INBOX_BUDGET / 2;
                }
                // Frames left unprocessed while the connection waited (a
                // basic.get reading from disk) go on now.
                conn.resume_input(&mut rbuf, now);
            }
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                conn.handle_timeout(Instant::now().into_std());
            }
        }
        if let Some(bytes) = conn.take_output(Instant::now().into_std()) {
            handle.queued_for_write(bytes.len());
            if out_tx.send(bytes).is_err() {
                conn.cleanup();
                break;
            }
        }
        if conn.is_closed() {
            break;
        }
        if busy {
            // A flooding publisher would otherwise keep its worker for a whole
            // cooperative budget (128 reads, megabytes of frames) while the
            // consumers it feeds wait; give them a turn after each big batch.
            tokio::task::yield_now().await;
        }
    }
    conn.cleanup();
    // Deliveries still in the inbox go back to their queues.
    inbox.close();
    while let Ok(ev) = inbox.try_recv() {
        conn.handle_event(ev, Instant::now().into_std());
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    tracing::info!(
        conn = conn.id(),
        peer = %peer,
        user = conn.user(),
        vhost = conn.vhost_name(),
        reason = conn.close_reason().unwrap_or("client closed the socket"),
        "connection closed"
    );
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    handle: Arc<ConnHandle>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(bytes) = next.take() {
            let n = bytes.len();
            if writer.write_all(&bytes).await.is_err() {
                // The reader notices the dead socket; drop what is left.
                handle.written(n);
                while let Ok(b) = rx.try_recv() {
                    handle.written(b.len());
                }
                return;
            }
            handle.written(n);
            next = rx.try_recv().ok();
        }
    }
    let _ = writer.shutdown().await;
}
