//! `procmond-wal`: inspect, verify and load-test a WAL directory, and run the reference broker.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// procmond's durable event log and broker tools.
#[derive(Debug, Parser)]
#[command(name = "procmond-wal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference broker on a Unix socket.
    Broker(cli::broker::BrokerArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Broker(args) => cli::broker::run(args),
    }
}
