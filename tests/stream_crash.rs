//! Crash test for streams: the broker runs as a child process (this test
//! binary re-run with `WARREN_STREAM_CRASH_CHILD` set), two connections
//! publish to one stream with confirms, the child is killed with SIGKILL at a
//! varying moment, and a restarted broker on the same directory must hold
//! every confirmed message once, intact and in each publisher's order, with
//! the log still appendable. The stream grows across the kills.
//! `WARREN_CRASH_ITERATIONS` (default 4) sets how many kills.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

const CHILD_ENV: &str = "WARREN_STREAM_CRASH_CHILD";
const STREAM: &str = "crash.stream";

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(&dir);
        return;
    }
    let iterations: usize = std::env::var("WARREN_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_confirmed = HashSet::new();
    for i in 0..iterations {
        rt.block_on(iteration(dir.path(), i, &mut all_confirmed));
    }
    println!("stream crash test: {iterations} kills, every confirmed message in the stream");
}

/// The child: a broker on `dir`; prints its port; runs until killed.
fn run_child(dir: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = warren::Broker::builder()
            .port(0)
            .management_port(None)
            .data_dir(dir, warren::EngineKind::Redb)
            .start()
            .await
            .expect("broker starts");
        println!("PORT {}", broker.local_addr().port());
        // Run until the parent kills us.
        std::future::pending::<()>().await;
    });
}

struct ChildBroker {
    child: Child,
    url: String,
}

fn spawn(dir: &std::path::Path) -> ChildBroker {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, dir.display().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("port line");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .to_owned();
    ChildBroker {
        child,
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    }
}

fn body_for(id: &str) -> Vec<u8> {
    warren_integration_tests::checked_body(id, 100)
}

fn id_of(body: &[u8]) -> Option<String> {
    warren_integration_tests::checked_id(body, 100)
}

async fn declare(conn: &Connection) {
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    ch.queue_declare(
        STREAM.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare the stream");
}

/// Everything in the stream, in offset order, as ids (None: a corrupt body).
async fn read_all(conn: &Connection) -> Vec<Option<String>> {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let mut consumer = ch
        .basic_consume(
            STREAM.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("consume");
    let mut out = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        out.push(id_of(&d.data));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

async fn iteration(dir: &std::path::Path, i: usize, all_confirmed: &mut HashSet<String>) {
    let broker = spawn(dir);
    let setup = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .expect("connect");
    declare(&setup).await;
    let confirmed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for p in 0..2 {
        let (url, confirmed) = (broker.url.clone(), confirmed.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
                return;
            };
            let Ok(ch) = conn.create_channel().await else {
                return;
            };
            if ch
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .is_err()
            {
                return;
            }
            for n in 0.. {
                let id = format!("{i}-{p}-{n:06}");
                let Ok(confirm) = ch
                    .basic_publish(
                        "".into(),
                        STREAM.into(),
                        BasicPublishOptions::default(),
                        &body_for(&id),
                        BasicProperties::default(),
                    )
                    .await
                else {
                    return;
                };
                match confirm.await {
                    Ok(c) if c.is_ack() => confirmed.lock().expect("ledger").push(id),
                    _ => return,
                }
            }
        }));
    }
    for _ in 0..200 {
        if confirmed.lock().expect("ledger").len() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(30 + (i as u64 * 137) % 300)).await;
    let mut child = broker.child;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let confirmed = confirmed.lock().expect("ledger").clone();
    assert!(
        !confirmed.is_empty(),
        "iteration {i}: nothing was confirmed"
    );
    all_confirmed.extend(confirmed);

    // Restart and read the whole stream back.
    let broker = spawn(dir);
    let conn = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .expect("reconnect");
    let read = read_all(&conn).await;
    assert!(
        read.iter().all(Option::is_some),
        "iteration {i}: a corrupt message"
    );
    let ids: Vec<String> = read.into_iter().flatten().collect();
    let mut seen = HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_insert(0) += 1;
    }
    let lost: Vec<&String> = all_confirmed
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "iteration {i}: confirmed messages lost: {lost:?}"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "iteration {i}: a message twice"
    );
    // Each publisher's messages are in its order.
    let mut last: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let publisher = id
            .rsplit_once('-')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        if let Some(prev) = last.insert(publisher, id.clone()) {
            assert!(prev < *id, "iteration {i}: {prev} after {id}");
        }
    }
    let mut child = broker.child;
    child.kill().expect("kill");
    let _ = child.wait();
}
