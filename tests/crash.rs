//! Crash tests: the broker runs as a child process (this test binary re-run
//! with `WARREN_CRASH_CHILD` set), several connections publish persistent
//! messages with confirms while a consumer acks some, the child is killed with
//! SIGKILL at a random moment, and a restarted broker on the same directory
//! must hold every confirmed message exactly once and intact — redelivered if
//! it had been delivered and not acked — and no transient entity.
//!
//! Each iteration also creates a vhost and a user through the management API
//! while the load runs; once the API has answered 201 they must be there
//! after the kill.
//!
//! Runs on both engines. `WARREN_CRASH_ITERATIONS` (default 4 per engine) sets
//! how many kills.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const CHILD_ENV: &str = "WARREN_CRASH_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
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
    for engine in ["redb", "sled"] {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..iterations {
            rt.block_on(iteration(engine, dir.path(), i));
        }
        println!("crash test: {engine}: {iterations} kills, every confirmed message recovered");
    }
}

/// The child: a broker on the given directory; prints its port; runs until killed
/// (or stops cleanly on stdin EOF).
fn run_child(spec: &str) {
    let (engine, dir) = spec.split_once(':').expect("engine:dir");
    let engine = warren::EngineKind::parse(engine).expect("engine");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = warren::Broker::builder()
            .port(0)
            .management_port(Some(0))
            .data_dir(dir, engine)
            .start()
            .await
            .expect("broker starts");
        let mgmt = broker.management_addr().map_or(0, |a| a.port());
        println!("PORT {} {mgmt}", broker.local_addr().port());
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await;
        broker.shutdown().await;
    });
}

struct ChildBroker {
    child: Child,
    url: String,
    api: String,
}

/// One management API request as guest; the status code.
async fn api_status(method: &'static str, url: String, body: &'static str) -> u16 {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .expect("request");
        agent.run(req).map_or(0, |r| r.status().as_u16())
    })
    .await
    .unwrap_or(0)
}

fn spawn(engine: &str, dir: &std::path::Path) -> ChildBroker {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, format!("{engine}:{}", dir.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("port line");
    let ports = line.trim().strip_prefix("PORT ").expect("PORT line");
    let (port, mgmt) = ports.split_once(' ').expect("AMQP and API ports");
    ChildBroker {
        child,
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        api: format!("http://127.0.0.1:{mgmt}/api"),
    }
}

fn body_for(id: &str) -> Vec<u8> {
    warren_integration_tests::checked_body(id, 200)
}

fn id_of(body: &[u8]) -> Option<String> {
    warren_integration_tests::checked_id(body, 200)
}

#[derive(Default)]
struct Ledger {
    confirmed: HashSet<String>,
    published: HashSet<String>,
    delivered_unacked: HashSet<String>,
    acked: HashSet<String>,
}

async fn iteration(engine: &str, dir: &std::path::Path, i: usize) {
    let queue = format!("crash.q{i}");
    let broker = spawn(engine, dir);
    let setup = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = setup.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .expect("declare");
    ch.queue_declare(
        format!("crash.transient{i}").as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare transient");
    ch.exchange_declare(
        format!("crash.tx{i}").as_str().into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare transient exchange");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut tasks = Vec::new();
    for p in 0..3 {
        let (url, queue, ledger) = (broker.url.clone(), queue.clone(), ledger.clone());
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
                let id = format!("{i}-{p}-{n}");
                ledger.lock().unwrap().published.insert(id.clone());
                let props = BasicProperties::default().with_delivery_mode(2);
                let Ok(confirm) = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body_for(&id),
                        props,
                    )
                    .await
                else {
                    return;
                };
                match confirm.await {
                    Ok(c) if c.is_ack() => {
                        ledger.lock().unwrap().confirmed.insert(id);
                    }
                    _ => return,
                }
            }
        }));
    }
    {
        // A consumer that acks every other message it gets.
        let (url, queue, ledger) = (broker.url.clone(), queue.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
                return;
            };
            let Ok(ch) = conn.create_channel().await else {
                return;
            };
            let _ = ch.basic_qos(50, BasicQosOptions::default()).await;
            let Ok(mut consumer) = ch
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            else {
                return;
            };
            let mut k = 0u64;
            while let Some(Ok(d)) = consumer.next().await {
                let Some(id) = id_of(&d.data) else { continue };
                k += 1;
                if k.is_multiple_of(2) {
                    ledger.lock().unwrap().delivered_unacked.insert(id.clone());
                    if d.ack(BasicAckOptions::default()).await.is_err() {
                        return;
                    }
                    let mut l = ledger.lock().unwrap();
                    l.delivered_unacked.remove(&id);
                    l.acked.insert(id);
                } else {
                    ledger.lock().unwrap().delivered_unacked.insert(id);
                }
            }
        }));
    }
    // Let the load get going (the machine may be busy), then kill at a
    // pseudo-random moment.
    for _ in 0..200 {
        if ledger.lock().unwrap().confirmed.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delay = 20 + (i as u64 * 97 + engine.len() as u64 * 31) % 400;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    // Operator changes made while the load runs, the kill right after
    // the answer: answered means on disk.
    let user = format!("{}/users/crash-u{i}", broker.api);
    let vhost = format!("{}/vhosts/crash-v{i}", broker.api);
    let made_user = api_status("PUT", user, r#"{"password":"p","tags":""}"#).await;
    let made_vhost = api_status("PUT", vhost, "").await;
    assert_eq!(
        (made_user, made_vhost),
        (201, 201),
        "{engine} iteration {i}: creating a user and a vhost"
    );
    let mut child = broker.child;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("ledger")
        .into_inner()
        .unwrap();
    assert!(
        !ledger.confirmed.is_empty(),
        "{engine} iteration {i}: nothing was confirmed before the kill"
    );

    // Restart on the same directory and read everything back.
    let broker = spawn(engine, dir);
    for k in 0..=i {
        for what in ["users/crash-u", "vhosts/crash-v"] {
            let url = format!("{}/{what}{k}", broker.api);
            assert_eq!(
                api_status("GET", url, "").await,
                200,
                "{engine} iteration {i}: {what}{k} was lost"
            );
        }
    }
    let conn = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .expect("reconnect");
    let ch = conn.create_channel().await.expect("channel");
    for (kind, name) in [("queue", format!("crash.transient{i}"))] {
        let r = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(
            r.is_err(),
            "{engine}: transient {kind} {name} survived a restart"
        );
    }
    let ch = conn.create_channel().await.expect("channel");
    let r = ch
        .exchange_declare(
            format!("crash.tx{i}").as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        r.is_err(),
        "{engine}: transient exchange survived a restart"
    );
    let ch = conn.create_channel().await.expect("channel");
    let mut seen: HashMap<String, bool> = HashMap::new();
    loop {
        let got = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(m) = got else { break };
        let id = id_of(&m.delivery.data)
            .unwrap_or_else(|| panic!("{engine} iteration {i}: a recovered body is corrupt"));
        assert!(
            ledger.published.contains(&id),
            "{engine}: unknown message {id}"
        );
        let dup = seen.insert(id.clone(), m.delivery.redelivered);
        assert!(
            dup.is_none(),
            "{engine} iteration {i}: message {id} recovered twice"
        );
    }
    for id in &ledger.confirmed {
        if ledger.acked.contains(id) {
            continue;
        }
        assert!(
            seen.contains_key(id),
            "{engine} iteration {i}: confirmed message {id} was lost ({} confirmed, {} recovered)",
            ledger.confirmed.len(),
            seen.len()
        );
    }
    for id in &ledger.delivered_unacked {
        if let Some(redelivered) = seen.get(id) {
            assert!(*redelivered, "{engine} iteration {i}: {id} was delivered before the crash but not marked redelivered");
        }
    }
    drop(conn);
    let mut child = broker.child;
    child.kill().expect("kill");
    let _ = child.wait();
}
