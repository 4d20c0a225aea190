//! CPU time spent by this process and by one named thread of it, so `load` can report what a
//! durable event costs without a profiler. Linux only: `getrusage(2)` for the process and
//! `/proc/self/task/<tid>/` for a thread. Reads only; it must never change what it measures.

use std::path::Path;
use std::time::Duration;

/// User plus system CPU time of the whole process so far (every thread, living or exited).
pub fn process_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call, and
    // RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    Some(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(value: libc::timeval) -> Duration {
    let seconds = u64::try_from(value.tv_sec).unwrap_or(0);
    let micros = u32::try_from(value.tv_usec).unwrap_or(0);
    Duration::from_secs(seconds) + Duration::from_micros(u64::from(micros))
}

/// A thread of this process, found by name, whose CPU time can be read while it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCpu {
    tid: u32,
}

impl ThreadCpu {
    /// The first living thread of this process named `name`. The kernel keeps only the first
    /// 15 bytes of a thread name, so longer names are matched on that prefix.
    pub fn find(name: &str) -> Option<ThreadCpu> {
        let wanted = name.as_bytes().get(..15).unwrap_or(name.as_bytes());
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        tasks
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .find(|tid| {
                std::fs::read(format!("/proc/self/task/{tid}/comm"))
                    .is_ok_and(|comm| comm.strip_suffix(b"\n").unwrap_or(&comm) == wanted)
            })
            .map(|tid| ThreadCpu { tid })
    }

    /// The thread's CPU time so far (`None` once it has exited). Nanosecond resolution from
    /// `schedstat` where the kernel has it; otherwise `stat`'s user and system clock ticks.
    pub fn cpu(&self) -> Option<Duration> {
        let dir = format!("/proc/self/task/{}", self.tid);
        let dir = Path::new(&dir);
        if let Ok(text) = std::fs::read_to_string(dir.join("schedstat"))
            && let Some(nanos) = text.split_whitespace().next().and_then(|n| n.parse().ok())
        {
            return Some(Duration::from_nanos(nanos));
        }
        let text = std::fs::read_to_string(dir.join("stat")).ok()?;
        ticks_from_stat(&text).map(|ticks| ticks_to_duration(ticks, clock_ticks_per_s()))
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces or parentheses itself, so fields are counted after
/// its last `)`.
fn ticks_from_stat(line: &str) -> Option<u64> {
    let after_name = &line[line.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th field here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn ticks_to_duration(ticks: u64, per_s: u64) -> Duration {
    Duration::from_secs(ticks / per_s)
        + Duration::from_nanos((ticks % per_s) * 1_000_000_000 / per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_name_with_spaces_and_parentheses() {
        let line = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0 99";
        assert_eq!(ticks_from_stat(line), Some(42));
        assert_eq!(ticks_from_stat("garbage"), None);
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
    }

    #[test]
    fn a_busy_thread_is_found_by_name_and_its_cpu_grows() {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("cputime-test-spinner-long-name".into())
            .spawn(move || {
                let mut x = 0u64;
                let _ = ready_tx.send(());
                while stop_rx.try_recv().is_err() {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
            .unwrap();
        ready_rx.recv().unwrap();
        let thread = ThreadCpu::find("cputime-test-spinner-long-name").expect("thread found");
        let first = thread.cpu().expect("cpu readable");
        let process_first = process_cpu().expect("process cpu");
        let mut later = first;
        while later <= first {
            later = thread.cpu().expect("cpu readable");
        }
        stop_tx.send(()).unwrap();
        spinner.join().unwrap();
        assert!(process_cpu().expect("process cpu") >= process_first);
        assert!(ThreadCpu::find("no-such-thread-here").is_none());
    }
}
