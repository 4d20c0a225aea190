//! The two system constants the /proc reader needs to turn kernel units into ours: clock
//! ticks per second (CPU times and start times are in ticks) and the page size (RSS is in
//! pages).
//!
//! This is the only place in the sources that calls into libc; it must not read /proc.

use crate::source::error::SourceError;

/// Kernel units for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemConstants {
    /// `sysconf(_SC_CLK_TCK)`: the unit of the CPU and start times in `/proc/[pid]/stat`.
    pub clock_ticks_per_s: u64,
    /// `sysconf(_SC_PAGESIZE)`: the unit of the RSS in `/proc/[pid]/stat`.
    pub page_size_bytes: u64,
}

impl SystemConstants {
    /// This host's values.
    pub fn of_this_host() -> Result<Self, SourceError> {
        Ok(SystemConstants {
            clock_ticks_per_s: sysconf("_SC_CLK_TCK", libc::_SC_CLK_TCK)?,
            page_size_bytes: sysconf("_SC_PAGESIZE", libc::_SC_PAGESIZE)?,
        })
    }
}

fn sysconf(name: &'static str, key: libc::c_int) -> Result<u64, SourceError> {
    // SAFETY: sysconf only reads a configuration value selected by an integer; it takes no
    // pointers and has no preconditions.
    let value = unsafe { libc::sysconf(key) };
    u64::try_from(value)
        .ok()
        .filter(|&value| value > 0)
        .ok_or(SourceError::Sysconf { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_reports_positive_units() {
        let constants = SystemConstants::of_this_host().unwrap();
        assert!(constants.clock_ticks_per_s > 0);
        assert!(constants.page_size_bytes.is_power_of_two());
    }
}
