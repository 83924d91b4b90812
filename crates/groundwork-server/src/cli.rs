//! The `groundwork` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Groundwork: infrastructure layer and server for AI-agent backends.
#[derive(Debug, Parser)]
#[command(name = "groundwork", version, about)]
pub struct Cli {
    /// TOML configuration file (settings below the environment variables in precedence).
    #[arg(long, global = true, env = "GROUNDWORK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (overrides GROUNDWORK_LOG_FORMAT and the file).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the API, with the queue workers unless told otherwise.
    Serve {
        /// Address to listen on (overrides GROUNDWORK_BIND and the file).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
        /// Serve the API only; run the queue workers elsewhere with `groundwork worker`
        /// (overrides GROUNDWORK_WORKERS). The outbox relay still runs.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run the queue workers (executions, notifications, audit) and the outbox relay, without
    /// the API, until SIGINT or SIGTERM.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) as TOML.
    Config,
}

impl Cli {
    /// Applies the command-line overrides, the last word in precedence.
    pub fn apply(&self, config: &mut Config) {
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Command::Serve { bind, no_workers } = &self.command {
            if let Some(bind) = bind {
                config.bind = *bind;
            }
            if *no_workers {
                config.workers = false;
            }
        }
    }
}
