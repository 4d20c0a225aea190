//! `procmond-wal`: inspect, verify and load-test a WAL directory, and run the reference broker.
//!
//! Exit codes for every subcommand: 0 success, 1 the command ran and found a problem, 2 it
//! could not run (see `cli`).

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
    /// The main job: watch this host's processes (or generate load), make every event
    /// durable in the WAL and deliver it to the broker (DAEMONEYE_BROKER_SOCKET, or an
    /// embedded one that prints events). Exit 0 when nothing is outstanding at the end,
    /// 1 when anything is, 2 when it could not run.
    Run(cli::run::RunArgs),
    /// Print every record of a WAL directory: one JSON object per line, or a table.
    Dump(cli::dump::DumpArgs),
    /// Check a WAL directory: exit 0 clean, 1 damage found (each place reported), 2 could
    /// not run.
    Verify(cli::verify::VerifyArgs),
    /// Segments, sequence ranges, record counts, bytes and checkpoint of a WAL directory.
    Stats(cli::stats::StatsArgs),
    /// Append synthetic events durably through the WAL and report events/s, MB/s, syncs
    /// and durable-latency percentiles; then check the directory (exit 1 if it does not hold
    /// exactly the appended events, undamaged; 130 after Ctrl-C).
    Load(cli::load::LoadArgs),
    /// Run the reference broker on a Unix socket.
    Broker(cli::broker::BrokerArgs),
    /// Drive the event bus connector and measure publish→acknowledged events/s.
    #[command(hide = true)]
    ConnectorLoad(cli::connector::ConnectorLoadArgs),
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // The read-only tools report damage themselves; the library's per-region warnings would
    // repeat it. RUST_LOG still overrides.
    let default_filter = match command {
        Command::Dump(_) | Command::Verify(_) | Command::Stats(_) => "error",
        Command::Load(_) | Command::Run(_) => "warn",
        Command::Broker(_) => "info",
        Command::ConnectorLoad(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        // Log lines go above a live status or progress line instead of through it.
        .with_writer(cli::logs::StderrLogs)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match command {
        Command::Run(args) => cli::run::run(args),
        Command::Dump(args) => cli::dump::run(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Load(args) => cli::load::run(args),
        Command::Broker(args) => cli::broker::run(args),
        Command::ConnectorLoad(args) => cli::connector::run(args),
    }
}
