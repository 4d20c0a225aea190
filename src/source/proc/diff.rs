//! The snapshot differ: previous snapshot + new snapshot → Start, Stop and Modify changes.
//!
//! Pure: no I/O, no clock. Rules:
//! - a pid only in the new snapshot is a **Start**; a pid only in the previous one a **Stop**;
//! - a pid in both with another start time is a reused pid: **Stop** of the old process, then
//!   **Start** of the new one;
//! - the same process (pid and start time) with a changed tracked attribute — name,
//!   executable path, argv, uid, ppid — is a **Modify**. An attribute that could not be read
//!   in either poll is not compared, so read failures never look like changes. CPU, memory
//!   and metadata change all the time and are not tracked; neither is the name of a kernel
//!   thread (a `kworker` shows the workqueue it currently serves in its name, so it changes
//!   many times a second, and no process can rename a kernel thread);
//! - anything else produces nothing.
//!
//! Changes come out ordered by pid (a reused pid's Stop before its Start), so the same two
//! snapshots always give the same sequence.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};

use super::snapshot::{META_CHANGED, ProcessRecord, Snapshot};
use crate::event::{EventKind, ProcessEvent};

/// The tracked attributes that differ between two records of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangedFields {
    /// `name` changed (e.g. `prctl(PR_SET_NAME)` or `execve`).
    pub name: bool,
    /// `executable_path` changed (`execve` of another file).
    pub executable_path: bool,
    /// `argv` changed (`execve`, or the process rewrote its arguments).
    pub argv: bool,
    /// The real uid changed.
    pub uid: bool,
    /// The parent changed (re-parented when its parent exited).
    pub ppid: bool,
}

impl ChangedFields {
    /// Whether anything changed.
    pub fn any(self) -> bool {
        self.name || self.executable_path || self.argv || self.uid || self.ppid
    }

    /// The names of the changed attributes, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (self.name, "name"),
            (self.executable_path, "executable_path"),
            (self.argv, "argv"),
            (self.uid, "uid"),
            (self.ppid, "ppid"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
    }
}

impl fmt::Display for ChangedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, name) in self.names().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// Compares the tracked attributes of two records of the same process.
pub fn changed_fields(before: &ProcessRecord, after: &ProcessRecord) -> ChangedFields {
    debug_assert!(
        before.same_process(after),
        "only one process's records compare"
    );
    let executable_seen = !before.unobserved.executable && !after.unobserved.executable;
    let argv_seen = !before.unobserved.argv && !after.unobserved.argv;
    let uid_seen = !before.unobserved.uid && !after.unobserved.uid;
    let name_tracked = !(before.kernel_thread && after.kernel_thread);
    ChangedFields {
        name: name_tracked && before.name != after.name,
        executable_path: executable_seen && before.executable_path != after.executable_path,
        argv: argv_seen && before.argv != after.argv,
        uid: uid_seen && before.uid != after.uid,
        ppid: before.ppid != after.ppid,
    }
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<'a> {
    /// A process appeared.
    Start(&'a ProcessRecord),
    /// A process is gone (its last record).
    Stop(&'a ProcessRecord),
    /// A process is still there with changed tracked attributes.
    Modify {
        /// The previous record.
        before: &'a ProcessRecord,
        /// The new record.
        after: &'a ProcessRecord,
        /// What changed.
        changed: ChangedFields,
    },
}

impl Change<'_> {
    /// The event kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Change::Start(_) => EventKind::Start,
            Change::Stop(_) => EventKind::Stop,
            Change::Modify { .. } => EventKind::Modify,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        match self {
            Change::Start(record) | Change::Stop(record) => record.pid,
            Change::Modify { after, .. } => after.pid,
        }
    }

    /// The event to publish: Start and Modify carry the new record; Stop carries the last
    /// record seen (a gone process cannot be read). `observed_at` is the collection time of
    /// the poll that noticed the change (for a Stop, when the absence was seen).
    pub fn to_event(&self, observed_at: DateTime<Utc>) -> (ProcessEvent, EventKind) {
        let event = match self {
            Change::Start(record) | Change::Stop(record) => record.to_event(observed_at),
            Change::Modify { after, changed, .. } => {
                let mut event = after.to_event(observed_at);
                event
                    .platform_metadata
                    .insert(META_CHANGED.to_owned(), changed.to_string());
                event
            }
        };
        (event, self.kind())
    }
}

/// The changes from `previous` to `next`, ordered by pid.
pub fn diff<'a>(previous: &'a Snapshot, next: &'a Snapshot) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    let mut old = previous.processes.values().peekable();
    let mut new = next.processes.values().peekable();
    // A merge of two pid-ordered sequences.
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(before), Some(after)) => before.pid.cmp(&after.pid),
        };
        match order {
            Ordering::Less => {
                if let Some(before) = old.next() {
                    changes.push(Change::Stop(before));
                }
            }
            Ordering::Greater => {
                if let Some(after) = new.next() {
                    changes.push(Change::Start(after));
                }
            }
            Ordering::Equal => {
                let (Some(before), Some(after)) = (old.next(), new.next()) else {
                    unreachable!("both sides were peeked");
                };
                if !before.same_process(after) {
                    changes.push(Change::Stop(before));
                    changes.push(Change::Start(after));
                    continue;
                }
                let changed = changed_fields(before, after);
                if changed.any() {
                    changes.push(Change::Modify {
                        before,
                        after,
                        changed,
                    });
                }
            }
        }
    }
    changes
}

/// The events for `changes` found by the poll of `next` (see [`Change::to_event`]).
pub fn to_events(changes: &[Change<'_>], next: &Snapshot) -> Vec<(ProcessEvent, EventKind)> {
    changes
        .iter()
        .map(|change| change.to_event(next.collection_time))
        .collect()
}
