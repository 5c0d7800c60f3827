//! `warren-perf`: see the crate README for the scenarios.

use std::process::ExitCode;

use clap::Parser;
use warren_perf::cli::{Cli, Scenario};
use warren_perf::scenario::{self, Ctx};
use warren_perf::sys::ProcWatch;
use warren_perf::url::AmqpUrl;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = match AmqpUrl::parse(&cli.global.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("warren-perf: --url: {e}");
            return ExitCode::from(2);
        }
    };
    let broker = match cli.global.broker_pid {
        Some(pid) => match ProcWatch::new(pid) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("warren-perf: --broker-pid: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let threads = cli.global.threads.max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren-perf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Ctx {
        url,
        global: cli.global.clone(),
        broker,
    };
    let code = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Throughput(a) => scenario::throughput(&ctx, a).await,
            Scenario::Fanout(a) => scenario::fanout(&ctx, a).await,
            Scenario::Latency(a) => scenario::latency(&ctx, a).await,
            Scenario::Backlog(a) => scenario::backlog(&ctx, a).await,
            Scenario::Connections(a) => scenario::connections(&ctx, a).await,
            Scenario::Startup(a) => scenario::startup(&ctx, a).await,
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
