//! Event sources: where the process events that go into the WAL come from.
//!
//! - [`proc`]: this host's real processes, by polling /proc.
//! - [`synthetic`]: generated events at a chosen rate and size, deterministic from a seed,
//!   for load through the whole pipeline.
//!
//! Both yield batches of `(ProcessEvent, EventKind)`. Sources only produce events: they must
//! never write to the WAL or talk to the broker themselves. What each reports and what it
//! misses is in `docs/sources.md`.

pub mod error;
pub mod proc;
pub mod synthetic;

pub use error::SourceError;
