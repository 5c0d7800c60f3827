//! `startup`: spawn the broker, time spawn → TCP accept → connection.open-ok, kill it; K runs.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::{fail_early, Ctx};
use crate::cli::StartupArgs;
use crate::client::{Conn, ConnOpts};
use crate::report::{self, round};
use crate::sys;
use crate::{bail, Error, Result};

/// `exec` the command when it is a plain command line, so that the spawned PID is
/// the broker itself (and its RSS can be read); anything shell-ish runs as is.
pub fn shell_line(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("");
    let shellish = cmd.chars().any(|c| {
        matches!(
            c,
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' | '$' | '\n'
        )
    }) || first.contains('=')
        || first == "exec";
    if shellish {
        cmd.to_owned()
    } else {
        format!("exec {cmd}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

struct RunFigures {
    tcp_ms: f64,
    ready_ms: f64,
    rss_kb: Option<u64>,
    comm: String,
    server: String,
}

async fn port_open(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

async fn stop_child(child: &mut Child) -> Option<String> {
    let pgid = child.id();
    sys::kill_group(pgid, sys::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; make sure nothing else of the group lingers.
            sys::kill_group(pgid, sys::SIGKILL);
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sys::kill_group(pgid, sys::SIGKILL);
    let _ = child.wait();
    Some(format!(
        "broker (pid {pgid}) ignored SIGTERM for 15s; killed"
    ))
}

async fn one_run(ctx: &Ctx, a: &StartupArgs, addr: &str) -> Result<RunFigures> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(shell_line(&a.cmd)).stdin(Stdio::null());
    match &a.log {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error(format!("opening --log {path}: {e}")))?;
            let f2 = f.try_clone()?;
            cmd.stdout(f).stderr(f2);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.process_group(0);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error(format!("cannot start `{}`: {e}", a.cmd)))?;
    let pid = child.id();
    let timeout = Duration::from_secs_f64(a.timeout.max(0.1));
    let mut tcp_at: Option<Duration> = None;
    let mut last_err = String::from("nothing accepted a connection");
    let r: Result<RunFigures> = loop {
        if t0.elapsed() > timeout {
            break Err(Error(format!(
                "no connection.open-ok from `{}` within {:.0}s ({last_err})",
                a.cmd, a.timeout
            )));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(Error(format!(
                "`{}` exited ({status}) before accepting an AMQP connection",
                a.cmd
            )));
        }
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp_at.get_or_insert(t0.elapsed());
                let hs = tokio::time::timeout(
                    Duration::from_secs(10),
                    Conn::handshake(s, &ctx.url, &ConnOpts::default()),
                )
                .await;
                match hs {
                    Ok(Ok(conn)) => {
                        let ready = t0.elapsed();
                        let server = conn.server.clone();
                        conn.close().await;
                        let rss_kb = sys::ProcWatch::new(pid)
                            .ok()
                            .and_then(|w| w.sample())
                            .map(|s| s.rss_kb);
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_default();
                        break Ok(RunFigures {
                            tcp_ms: tcp_at.unwrap_or(ready).as_secs_f64() * 1000.0,
                            ready_ms: ready.as_secs_f64() * 1000.0,
                            rss_kb,
                            comm,
                            server,
                        });
                    }
                    Ok(Err(e)) => last_err = e.to_string(),
                    Err(_) => last_err = "handshake timed out".into(),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                last_err = format!("connect: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    if let Some(w) = stop_child(&mut child).await {
        eprintln!("warren-perf: warning: {w}");
    }
    // Wait for the port to be free before the next run.
    let deadline = Instant::now() + Duration::from_secs(15);
    while port_open(addr).await {
        if Instant::now() > deadline {
            bail!("port of {addr} still accepts connections 15s after the broker was killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r
}

pub async fn startup(ctx: &Ctx, a: StartupArgs) -> i32 {
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    let port = a.port.unwrap_or(ctx.url.port);
    let mut url = ctx.url.clone();
    url.port = port;
    let addr = url.addr();
    if port_open(&addr).await {
        return fail_early(
            ctx,
            "startup",
            params,
            format!("something already accepts connections on {addr}: stop it first").into(),
        );
    }
    let ctx = Ctx {
        url,
        global: ctx.global.clone(),
        broker: None,
    };
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for k in 0..a.runs.max(1) {
        match one_run(&ctx, &a, &addr).await {
            Ok(f) => {
                if !ctx.global.quiet {
                    eprintln!(
                        "[startup] run {}: tcp accept {:.1} ms, connection.open-ok {:.1} ms{}",
                        k + 1,
                        f.tcp_ms,
                        f.ready_ms,
                        f.rss_kb
                            .map(|r| format!(", {} rss {:.1} MiB", f.comm, r as f64 / 1024.0))
                            .unwrap_or_default()
                    );
                }
                runs.push(f);
            }
            Err(e) => {
                errors.push(format!("run {}: {e}", k + 1));
                break;
            }
        }
    }
    let ready: Vec<f64> = runs.iter().map(|r| r.ready_ms).collect();
    let tcp: Vec<f64> = runs.iter().map(|r| r.tcp_ms).collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let server = runs.first().map(|r| r.server.clone()).unwrap_or_default();
    let mut m = ctx.head("startup", params, &server);
    m.insert("runs_ok".into(), json!(runs.len()));
    if !runs.is_empty() {
        m.insert("min_ms".into(), json!(round(min(&ready), 2)));
        m.insert("median_ms".into(), json!(round(median(&ready), 2)));
        m.insert("max_ms".into(), json!(round(max(&ready), 2)));
        m.insert("tcp_accept_min_ms".into(), json!(round(min(&tcp), 2)));
        m.insert("tcp_accept_median_ms".into(), json!(round(median(&tcp), 2)));
        m.insert(
            "runs_ms".into(),
            json!(ready.iter().map(|v| round(*v, 2)).collect::<Vec<_>>()),
        );
        m.insert(
            "spawned_process".into(),
            json!({
                "comm": runs[0].comm,
                "rss_at_ready_kb": runs.iter().filter_map(|r| r.rss_kb).max(),
            }),
        );
    }
    report::emit(m, &errors, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execs_plain_commands_only() {
        assert_eq!(
            shell_line("./warren --port 5690"),
            "exec ./warren --port 5690"
        );
        assert_eq!(shell_line("FOO=1 ./warren"), "FOO=1 ./warren");
        assert_eq!(shell_line("cd /x && ./warren"), "cd /x && ./warren");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
