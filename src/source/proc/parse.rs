//! Pure parsers for the /proc text formats the process source reads: `/proc/[pid]/stat`,
//! `/proc/[pid]/status` (the `Uid:` line), `/proc/[pid]/cmdline`, the `/proc/[pid]/exe` link
//! target, the `btime` line of `/proc/stat`, and `/proc/uptime`.
//!
//! Everything here takes bytes and returns values or a [`ParseError`]; it must never do I/O
//! and never panic, whatever the bytes (process names and argv are chosen by whoever started
//! the process).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// `PF_KTHREAD` in the `flags` field of `/proc/[pid]/stat`: the task is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// `PF_EXITING` in the `flags` field: the task is exiting (its memory, and with it argv and
/// the `exe` link, may already be gone while the state is still running).
pub const PF_EXITING: u32 = 0x0000_0004;

/// Suffix the kernel appends to the `exe` link target when the executable was unlinked.
const DELETED_SUFFIX: &str = " (deleted)";

/// Longest piece of offending text kept in a [`ParseError`] (the text is untrusted).
const ERROR_TEXT_BYTES: usize = 32;

/// The fields of `/proc/[pid]/stat` the source uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// Field 1: process id.
    pub pid: u32,
    /// Field 2: `comm`, the name between the first `(` and the last `)` (lossy UTF-8).
    pub comm: String,
    /// Field 3: state letter (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// Field 4: parent process id (0 for the kernel's own roots).
    pub ppid: u32,
    /// Field 5: process group id.
    pub pgrp: i64,
    /// Field 6: session id.
    pub session: i64,
    /// Field 9: kernel flags (`PF_*`).
    pub flags: u32,
    /// Field 14 + field 15: user plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 20: number of threads.
    pub num_threads: i64,
    /// Field 22: start time, in clock ticks after boot.
    pub start_ticks: u64,
    /// Field 24: resident set size, in pages (negative values read as 0).
    pub rss_pages: u64,
}

impl StatFields {
    /// Whether the task is a kernel thread (no executable, no argv).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Whether the task is exiting or has exited and waits to be reaped: its `exe` link and
    /// argv are gone (or going), which is not a change of those attributes.
    pub fn is_exiting(&self) -> bool {
        self.flags & PF_EXITING != 0 || matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Content of a /proc file that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// `stat` has no `(` ... `)` around the name.
    #[error("no parenthesised name")]
    MissingName,
    /// A field is absent.
    #[error("field {field} is missing")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field is not the number it should be.
    #[error("field {field} is not a number: {text:?}")]
    BadNumber {
        /// The field's name.
        field: &'static str,
        /// The first bytes of the offending text.
        text: String,
    },
}

/// Parses `/proc/[pid]/stat`.
///
/// The name may contain spaces, parentheses and any other byte except NUL, so it is taken
/// from the first `(` to the *last* `)`; the numeric fields follow the last `)`.
pub fn parse_stat(bytes: &[u8]) -> Result<StatFields, ParseError> {
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::MissingName)?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or(ParseError::MissingName)?;
    let pid = parse_number::<u32>("pid", bytes[..open].trim_ascii())?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();

    // After the name: field 3 onwards, separated by single spaces (any whitespace accepted).
    let mut fields = bytes[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|field| !field.is_empty());
    // `index` is the 1-based field number in proc(5); fields are consumed in order.
    let mut next_index = 3usize;
    let mut field = |index: usize, name: &'static str| -> Result<&[u8], ParseError> {
        debug_assert!(index >= next_index, "stat fields must be read in order");
        let skip = index - next_index;
        next_index = index + 1;
        fields
            .nth(skip)
            .ok_or(ParseError::MissingField { field: name })
    };
    let state_field = field(3, "state")?;
    let state = char::from(state_field[0]);
    let ppid = parse_number::<u32>("ppid", field(4, "ppid")?)?;
    let pgrp = parse_number::<i64>("pgrp", field(5, "pgrp")?)?;
    let session = parse_number::<i64>("session", field(6, "session")?)?;
    let flags = parse_number::<u32>("flags", field(9, "flags")?)?;
    let utime = parse_number::<u64>("utime", field(14, "utime")?)?;
    let stime = parse_number::<u64>("stime", field(15, "stime")?)?;
    let num_threads = parse_number::<i64>("num_threads", field(20, "num_threads")?)?;
    let start_ticks = parse_number::<u64>("starttime", field(22, "starttime")?)?;
    let rss = parse_number::<i64>("rss", field(24, "rss")?)?;
    Ok(StatFields {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        session,
        flags,
        cpu_ticks: utime.saturating_add(stime),
        num_threads,
        start_ticks,
        rss_pages: u64::try_from(rss).unwrap_or(0),
    })
}

/// User ids from the `Uid:` line of `/proc/[pid]/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUids {
    /// Real user id (who started the process).
    pub real: u32,
    /// Effective user id (whose permissions it has).
    pub effective: u32,
}

/// Finds the `Uid:` line of `/proc/[pid]/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_status_uids(bytes: &[u8]) -> Result<StatusUids, ParseError> {
    let line = bytes
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .ok_or(ParseError::MissingField { field: "Uid" })?;
    let mut ids = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|id| !id.is_empty());
    let real = ids
        .next()
        .ok_or(ParseError::MissingField { field: "Uid" })?;
    let effective = ids.next().ok_or(ParseError::MissingField {
        field: "effective uid",
    })?;
    Ok(StatusUids {
        real: parse_number("Uid", real)?,
        effective: parse_number("effective uid", effective)?,
    })
}

/// Splits `/proc/[pid]/cmdline` into argv.
///
/// Arguments are NUL-terminated; exactly one terminating NUL is dropped, so empty arguments
/// (including a trailing one) survive. A process that rewrote its argument area without NULs
/// yields one argument. Invalid UTF-8 is replaced (lossy), per argument. Kernel threads and
/// zombies have an empty file: no arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    body.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Turns the target of the `/proc/[pid]/exe` link into (path, whether the file still exists).
///
/// The kernel marks an executable that was unlinked after `execve` by appending
/// `" (deleted)"`; that suffix is removed and reported as `false`.
pub fn parse_exe_target(target: &OsStr) -> (String, bool) {
    let text = String::from_utf8_lossy(target.as_bytes());
    match text.strip_suffix(DELETED_SUFFIX) {
        Some(path) => (path.to_owned(), false),
        None => (text.into_owned(), true),
    }
}

/// The boot time in seconds since the Unix epoch, from the `btime` line of `/proc/stat`.
pub fn parse_boot_time_s(bytes: &[u8]) -> Result<u64, ParseError> {
    let value = bytes
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"btime "))
        .ok_or(ParseError::MissingField { field: "btime" })?;
    parse_number("btime", value.trim_ascii())
}

/// Seconds since boot, from the first field of `/proc/uptime` (`"12345.67 2345.67"`).
pub fn parse_uptime_s(bytes: &[u8]) -> Result<f64, ParseError> {
    let first = bytes
        .split(|b| b.is_ascii_whitespace())
        .find(|field| !field.is_empty())
        .ok_or(ParseError::MissingField { field: "uptime" })?;
    let uptime_s: f64 = parse_number("uptime", first)?;
    if !uptime_s.is_finite() || uptime_s < 0.0 {
        return Err(ParseError::BadNumber {
            field: "uptime",
            text: String::from_utf8_lossy(&first[..first.len().min(ERROR_TEXT_BYTES)]).into_owned(),
        });
    }
    Ok(uptime_s)
}

fn parse_number<T: std::str::FromStr>(field: &'static str, text: &[u8]) -> Result<T, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ParseError::BadNumber {
            field,
            text: String::from_utf8_lossy(&text[..text.len().min(ERROR_TEXT_BYTES)]).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel writes it (a `sleep` process), with `name` substituted.
    fn stat_line(pid: u32, name: &str) -> Vec<u8> {
        format!(
            "{pid} ({name}) S 1234 {pid} 77 34816 {pid} 4194304 96 0 0 0 7 3 0 0 20 0 1 0 \
             123456 5677056 256 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn stat_fields_are_read_from_their_positions() {
        let stat = parse_stat(&stat_line(4321, "sleep")).unwrap();
        assert_eq!(
            stat,
            StatFields {
                pid: 4321,
                comm: "sleep".into(),
                state: 'S',
                ppid: 1234,
                pgrp: 4321,
                session: 77,
                flags: 4_194_304,
                cpu_ticks: 10,
                num_threads: 1,
                start_ticks: 123_456,
                rss_pages: 256,
            }
        );
        assert!(!stat.is_kernel_thread());
    }

    #[test]
    fn names_with_parentheses_and_spaces_parse_from_the_last_paren() {
        for name in [") (", "a) (b", "x)", "((", " ", "a b c", "))) S 1 2 3"] {
            let stat = parse_stat(&stat_line(9, name)).unwrap();
            assert_eq!(stat.comm, name);
            assert_eq!(stat.ppid, 1234, "name {name:?}");
            assert_eq!(stat.start_ticks, 123_456, "name {name:?}");
        }
    }

    #[test]
    fn non_utf8_names_are_lossy() {
        let mut line = b"7 (a\xffb) ".to_vec();
        line.extend_from_slice(&stat_line(7, "x")[6..]);
        assert_eq!(parse_stat(&line).unwrap().comm, "a\u{fffd}b");
    }

    #[test]
    fn malformed_stat_is_an_error_not_a_panic() {
        let full = stat_line(5, "n");
        for end in 0..full.len() {
            // Every prefix either parses or errors; short ones must error.
            let parsed = parse_stat(&full[..end]);
            if end < 20 {
                assert!(parsed.is_err(), "prefix of {end} bytes parsed");
            }
        }
        assert_eq!(parse_stat(b"5 n) S"), Err(ParseError::MissingName));
        assert_eq!(parse_stat(b"5 )n( S"), Err(ParseError::MissingName));
        assert!(matches!(
            parse_stat(b"x5 (n) S 1"),
            Err(ParseError::BadNumber { field: "pid", .. })
        ));
        assert_eq!(
            parse_stat(b"5 (n) S 1 2 3"),
            Err(ParseError::MissingField { field: "flags" })
        );
        let bad_ppid = String::from_utf8(stat_line(5, "n"))
            .unwrap()
            .replace(" 1234 ", " -1 ");
        assert!(matches!(
            parse_stat(bad_ppid.as_bytes()),
            Err(ParseError::BadNumber { field: "ppid", .. })
        ));
    }

    #[test]
    fn kernel_threads_and_zombies_are_recognised() {
        let kthread = String::from_utf8(stat_line(2, "kthreadd"))
            .unwrap()
            .replace(" 4194304 ", " 2129984 ");
        assert!(parse_stat(kthread.as_bytes()).unwrap().is_kernel_thread());
        let zombie = String::from_utf8(stat_line(3, "z"))
            .unwrap()
            .replace(") S ", ") Z ");
        assert!(parse_stat(zombie.as_bytes()).unwrap().is_exiting());
    }

    #[test]
    fn status_uid_line() {
        let status = b"Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(
            parse_status_uids(status),
            Ok(StatusUids {
                real: 1000,
                effective: 0
            })
        );
        assert!(parse_status_uids(b"Name:\tx\n").is_err());
        assert!(parse_status_uids(b"Uid:\t\n").is_err());
        assert!(parse_status_uids(b"Uid:\tabc\t0\n").is_err());
    }

    #[test]
    fn cmdline_splits_on_nul_and_keeps_empty_arguments() {
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(parse_cmdline(b"a\x00\x00b\x00\x00"), ["a", "", "b", ""]);
        assert_eq!(
            parse_cmdline(b"nginx: master process"),
            ["nginx: master process"]
        );
        assert_eq!(
            parse_cmdline(b"\xff\xfe\x00ok\x00"),
            ["\u{fffd}\u{fffd}", "ok"]
        );
    }

    #[test]
    fn exe_target_reports_deleted_files() {
        assert_eq!(
            parse_exe_target(OsStr::new("/usr/bin/sleep")),
            ("/usr/bin/sleep".to_owned(), true)
        );
        assert_eq!(
            parse_exe_target(OsStr::new("/tmp/x (deleted)")),
            ("/tmp/x".to_owned(), false)
        );
        assert_eq!(
            parse_exe_target(OsStr::from_bytes(b"/tmp/\xff")),
            ("/tmp/\u{fffd}".to_owned(), true)
        );
    }

    #[test]
    fn uptime_first_field() {
        assert_eq!(parse_uptime_s(b"12345.67 2345.67\n"), Ok(12345.67));
        for bad in [&b""[..], b"   ", b"-1 2", b"inf 1", b"NaN 1", b"up 1"] {
            assert!(parse_uptime_s(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boot_time_line() {
        let stat = b"cpu  1 2 3\nintr 5\nctxt 9\nbtime 1700000000\nprocesses 77\n";
        assert_eq!(parse_boot_time_s(stat), Ok(1_700_000_000));
        assert!(parse_boot_time_s(b"cpu 1\n").is_err());
        assert!(parse_boot_time_s(b"btime soon\n").is_err());
    }
}
