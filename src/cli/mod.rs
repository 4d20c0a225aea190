//! The `procmond-wal` command-line tool's subcommands, one file each.

pub mod broker;
