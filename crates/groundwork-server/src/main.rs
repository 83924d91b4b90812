//! `groundwork`: see `groundwork --help`.

use std::process::ExitCode;

use clap::Parser as _;
use groundwork_server::cli::{Cli, Command};
use groundwork_server::config::Config;
use groundwork_server::{serve, telemetry};

/// mimalloc instead of glibc's allocator: under load, the LLM proxy spent about a fifth of
/// its CPU time in glibc's `malloc`/`free` (requests and answers are many small, short-lived
/// allocations across two worker threads), and CPU time per request is what the proxy adds
/// to a request's latency. Measured in BENCHMARKS.md ("LLM layer").
///
/// Built with mimalloc's `no_thp` feature: otherwise mimalloc asks for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`) on its memory, and where the kernel's THP `defrag` setting is
/// `madvise` (a common default), a fault in new memory then compacts and zeroes a 2 MiB page
/// on the spot. A growing LLM cache touches new memory all the time, and those faults stalled
/// a worker thread for milliseconds: the 500 req/s miss window's added p99 went from +3.3 ms
/// to +0.3 ms without them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One readable line (with its causes), not a debug dump.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())?;
    cli.apply(&mut config);
    match cli.command {
        Command::Config => {
            let text = config.to_redacted_toml()?;
            println!("{}", text.trim_end());
            Ok(())
        }
        Command::Migrate => {
            telemetry::init_tracing(config.log_format)?;
            let db = serve::connect_database(&config, false).await?;
            db.migrate().await?;
            db.close().await;
            tracing::info!(database = db.backend_kind().as_str(), "migrations applied");
            Ok(())
        }
        Command::Worker => {
            telemetry::init_tracing(config.log_format)?;
            serve::work(config).await
        }
        Command::Serve { .. } => {
            // Refuse an unauthenticated public bind before touching anything else.
            config.check_exposure()?;
            telemetry::init_tracing(config.log_format)?;
            let metrics = telemetry::install_metrics_recorder()?;
            serve::serve(config, metrics).await
        }
    }
}
