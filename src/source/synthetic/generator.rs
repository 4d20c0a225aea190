//! The synthetic event generator: a deterministic stream of Start, Stop and Modify events for
//! a simulated set of processes, each padded to a target encoded size.
//!
//! Pure: the seed and the collection times passed in determine every byte of every event.
//! It keeps a bounded set of simulated live processes so Stops and Modifies refer to
//! processes that were started, like a real host. It must never read the clock or /proc.

use chrono::{DateTime, TimeDelta, Utc};

use super::rng::SplitMix64;
use crate::event::{EventKind, ProcessEvent, limits};
use crate::source::error::SourceError;
use crate::wal::format::{EVENT_FIXED_PAYLOAD_BYTES, FRAME_HEADER_BYTES, encode_event, frame_len};

/// Largest accepted `event_bytes`: events this big still keep every argument within the
/// event limits, so none is truncated.
pub const MAX_EVENT_BYTES: u64 = limits::ARGV_TOTAL_BYTES as u64;

/// Most simulated processes alive at once (bounds the generator's memory).
pub const MAX_LIVE_PROCESSES: usize = 1024;

/// Metadata key marking generated events, so they can never be mistaken for evidence; the
/// value is the seed.
pub const META_SYNTHETIC: &str = "synthetic";

/// Pids are handed out upwards from here and wrap at the Linux default `pid_max`.
const FIRST_PID: u32 = 1000;
const PID_LIMIT: u32 = 4_194_304;

/// Characters of the padding argument.
const PAD_ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

/// Programs the simulated processes run: (name, executable, argv). Short on purpose: the
/// natural record (no padding) stays at or under 256 bytes, the smallest usual target.
const PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("bash", "/bin/bash", &["-bash"]),
    ("sshd", "/usr/sbin/sshd", &["sshd", "-D"]),
    ("nginx", "/usr/sbin/nginx", &["nginx", "-g", "daemon off;"]),
    ("python3", "/usr/bin/python3", &["python3", "app.py"]),
    (
        "postgres",
        "/usr/bin/postgres",
        &["postgres", "-D", "/srv/pg"],
    ),
    ("cron", "/usr/sbin/cron", &["cron", "-f"]),
    ("node", "/usr/bin/node", &["node", "server.js"]),
    (
        "curl",
        "/usr/bin/curl",
        &["curl", "-fsS", "http://10.0.0.1/"],
    ),
    ("containerd", "/usr/bin/containerd", &["containerd"]),
    ("make", "/usr/bin/make", &["make", "-j2"]),
];

/// Argument a Modify toggles at the end of argv (the process re-exec'd itself with it).
const TOGGLED_ARG: &str = "-v";
/// Suffix a Modify toggles on the name (the process renamed itself).
const RENAME_SUFFIX: &str = ":w";

/// Bytes of the WAL record `event` becomes (frame header, fixed payload fields and the
/// encoded event, aligned): the size `event_bytes` aims at. Events that cannot be encoded
/// count as 0.
pub fn record_bytes(event: &ProcessEvent) -> u64 {
    encode_event(event).map_or(0, |bytes| {
        frame_len(EVENT_FIXED_PAYLOAD_BYTES + bytes.len()) as u64
    })
}

/// One simulated process. Its changes are toggles, so repeated Modifies never grow it.
#[derive(Debug, Clone)]
struct LiveProcess {
    pid: u32,
    ppid: u32,
    /// Index into [`PROGRAMS`].
    program: usize,
    renamed: bool,
    extra_arg: bool,
    start_time: DateTime<Utc>,
    uid: u32,
}

/// The deterministic event stream.
#[derive(Debug, Clone)]
pub struct Generator {
    /// The seed as the `synthetic` metadata value (formatted once).
    seed_text: String,
    rng: SplitMix64,
    event_bytes: u64,
    live: Vec<LiveProcess>,
    next_pid: u32,
    generated: u64,
    /// ASCII padding text, grown once to the longest window needed.
    pad_source: String,
}

impl Generator {
    /// A generator for `seed`, padding events to `event_bytes` (rounded up to the record
    /// alignment of 8 bytes). Smaller targets give the natural size: at most 256 bytes for
    /// seeds under 10 000.
    pub fn new(seed: u64, event_bytes: u64) -> Result<Self, SourceError> {
        if event_bytes > MAX_EVENT_BYTES {
            return Err(SourceError::InvalidConfig {
                field: "event_bytes",
                requirement: "at most 131072 (128 KiB)",
            });
        }
        Ok(Generator {
            seed_text: seed.to_string(),
            rng: SplitMix64::new(seed),
            event_bytes,
            live: Vec::new(),
            next_pid: FIRST_PID,
            generated: 0,
            pad_source: String::new(),
        })
    }

    /// Events generated so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    /// Simulated processes currently alive.
    pub fn live_processes(&self) -> usize {
        self.live.len()
    }

    /// The next event, observed at `collection_time`.
    pub fn next_event(&mut self, collection_time: DateTime<Utc>) -> (ProcessEvent, EventKind) {
        let kind = self.choose_kind();
        let process = match kind {
            EventKind::Start => {
                let process = self.spawn(collection_time);
                self.live.push(process.clone());
                process
            }
            EventKind::Stop => {
                let index = self.rng.index(self.live.len());
                self.live.swap_remove(index)
            }
            EventKind::Modify => {
                let index = self.rng.index(self.live.len());
                let change = self.rng.below(3);
                let process = &mut self.live[index];
                match change {
                    // The process re-exec'd itself with other arguments.
                    0 => process.extra_arg = !process.extra_arg,
                    // It renamed itself (prctl PR_SET_NAME).
                    1 => process.renamed = !process.renamed,
                    // Its parent exited: re-parented to init (or, if it already was, adopted
                    // by a subreaper).
                    _ => process.ppid = if process.ppid == 1 { 2 } else { 1 },
                }
                process.clone()
            }
        };
        debug_assert!(self.live.len() <= MAX_LIVE_PROCESSES);
        let mut event = self.event_for(&process, collection_time);
        self.pad(&mut event);
        self.generated += 1;
        (event, kind)
    }

    /// Start when nothing is alive, never Start at the cap; otherwise 40 % Start, 35 % Stop,
    /// 25 % Modify (the live set does a bounded random walk).
    fn choose_kind(&mut self) -> EventKind {
        if self.live.is_empty() {
            return EventKind::Start;
        }
        let roll = self.rng.below(100);
        let full = self.live.len() >= MAX_LIVE_PROCESSES;
        match roll {
            0..40 if !full => EventKind::Start,
            // At the cap, what would have been a Start stops a process instead.
            0..75 => EventKind::Stop,
            _ => EventKind::Modify,
        }
    }

    fn spawn(&mut self, collection_time: DateTime<Utc>) -> LiveProcess {
        let program = self.rng.index(PROGRAMS.len());
        let pid = self.allocate_pid();
        let ppid = if self.live.is_empty() || self.rng.below(4) == 0 {
            1
        } else {
            self.live[self.rng.index(self.live.len())].pid
        };
        let uid = [0, 33, 1000, 1001][self.rng.index(4)];
        let started_ms_ago = i64::try_from(self.rng.below(1000)).unwrap_or(0);
        LiveProcess {
            pid,
            ppid,
            program,
            renamed: false,
            extra_arg: false,
            start_time: collection_time - TimeDelta::milliseconds(started_ms_ago),
            uid,
        }
    }

    /// The next pid not in use, wrapping like the kernel's pid allocator.
    fn allocate_pid(&mut self) -> u32 {
        loop {
            let pid = self.next_pid;
            self.next_pid = if pid + 1 >= PID_LIMIT {
                FIRST_PID
            } else {
                pid + 1
            };
            // At most MAX_LIVE_PROCESSES are taken, so this ends within that many steps.
            if !self.live.iter().any(|process| process.pid == pid) {
                return pid;
            }
        }
    }

    fn event_for(&mut self, process: &LiveProcess, collection_time: DateTime<Utc>) -> ProcessEvent {
        let (name, executable_path, argv) = PROGRAMS[process.program];
        let mut name = name.to_owned();
        if process.renamed {
            name.push_str(RENAME_SUFFIX);
        }
        let mut event = ProcessEvent::new(process.pid, name, collection_time);
        event.ppid = Some(process.ppid);
        event.executable_path = Some(executable_path.to_owned());
        event.command_line = argv.iter().map(|arg| (*arg).to_owned()).collect();
        if process.extra_arg {
            event.command_line.push(TOGGLED_ARG.to_owned());
        }
        event.start_time = Some(process.start_time);
        event.cpu_usage_percent = Some(self.rng.below(10_000) as f64 / 100.0);
        event.memory_usage_bytes = Some((1 + self.rng.below(4096)) * 64 * 1024);
        event.user_id = Some(process.uid.to_string());
        event.accessible = true;
        event.file_exists = true;
        event
            .platform_metadata
            .insert(META_SYNTHETIC.to_owned(), self.seed_text.clone());
        event
    }

    /// Appends one argument so the record reaches `event_bytes` (rounded up to 8).
    fn pad(&mut self, event: &mut ProcessEvent) {
        let Ok(encoded) = encode_event(event) else {
            return;
        };
        // One more argv entry costs an 8-byte length (bincode legacy) plus its bytes, and
        // the frame header is a multiple of the 8-byte frame alignment, so the padded
        // record is exactly the target rounded up to 8.
        let unpadded = (FRAME_HEADER_BYTES + EVENT_FIXED_PAYLOAD_BYTES + encoded.len()) as u64;
        // (A zero-length pad still adds the 8-byte length, which is what reaches the target.)
        let Some(pad_bytes) = self.event_bytes.checked_sub(unpadded + 8) else {
            return;
        };
        let offset = self.rng.index(PAD_ALPHABET.len());
        // Bounded by MAX_EVENT_BYTES, checked at construction.
        let pad_bytes = usize::try_from(pad_bytes).unwrap_or(0);
        if self.pad_source.len() < offset + pad_bytes {
            // The alphabet repeated: any window of it is a valid padding (one copy, no
            // per-byte work on the hot path).
            let repeats = (offset + pad_bytes).div_ceil(PAD_ALPHABET.len());
            self.pad_source = PAD_ALPHABET
                .repeat(repeats)
                .into_iter()
                .map(char::from)
                .collect();
        }
        event
            .command_line
            .push(self.pad_source[offset..offset + pad_bytes].to_owned());
    }
}
