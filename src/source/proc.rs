//! The /proc event source: watches this host's processes by polling /proc and reports
//! Start, Stop and Modify events.
//!
//! - [`parse`]: the /proc text formats (pure).
//! - [`snapshot`]: what one poll saw, last known values, CPU usage between polls,
//!   record → event (pure).
//! - [`diff`](mod@diff): two snapshots → changes (pure).
//! - [`schedule`]: the poll interval and the backpressure slow-down (pure).
//! - [`reader`]: reads a snapshot from a /proc tree (the only file I/O).
//! - [`system`]: clock ticks and page size (the only libc call).
//! - [`poller`]: ties them together, with a thin `tokio::time` wait.
//!
//! Polling sees what exists at each poll: a process that starts and exits between two
//! polls is never reported. `docs/sources.md` lists every field's origin and the cost.

pub mod diff;
pub mod parse;
pub mod poller;
pub mod reader;
pub mod schedule;
pub mod snapshot;
pub mod system;

pub use diff::{Change, ChangedFields, diff};
pub use poller::{PollBatch, ProcPoller, ProcPollerConfig, ProcSourceStats};
pub use reader::{ProcReader, ReadStats, SkipReason};
pub use schedule::{DEFAULT_BACKPRESSURE_FACTOR, PollSchedule};
pub use snapshot::{ProcessRecord, Snapshot, Unobserved};
pub use system::SystemConstants;
