//! `procmond-wal broker`: runs the reference broker in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procmond-wal broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Unix socket path to listen on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Print every received event as one JSON line on stdout.
    #[arg(long)]
    pub print: bool,
    /// Directory where each publisher's high-water mark is persisted.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs the broker until SIGINT/SIGTERM.
pub fn run(args: BrokerArgs) -> ExitCode {
    eprintln!("procmond-wal broker: not implemented yet ({args:?})");
    ExitCode::from(2)
}
