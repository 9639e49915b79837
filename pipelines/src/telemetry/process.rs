//! Resident memory and CPU time of this process, read from /proc at scrape
//! time and rendered as Prometheus text.

use std::fmt::Write;

/// Resident set size in bytes, if /proc is readable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident set size in bytes from /proc/self/statm: one short line, cheap
/// enough to read many times a second.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page_size > 0).then(|| pages * page_size as u64)
}

/// User plus system CPU time in seconds, if /proc is readable.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields after it are fixed.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// The process metrics in Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    if let Some(rss) = rss_bytes() {
        let _ = writeln!(
            out,
            "# HELP lookout_process_memory_rss_bytes Resident memory of the daemon\n\
             # TYPE lookout_process_memory_rss_bytes gauge\n\
             lookout_process_memory_rss_bytes {rss}"
        );
    }
    if let Some(cpu) = cpu_seconds() {
        let _ = writeln!(
            out,
            "# HELP lookout_process_cpu_seconds_total User and system CPU time of the daemon\n\
             # TYPE lookout_process_cpu_seconds_total counter\n\
             lookout_process_cpu_seconds_total {cpu}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::rss_bytes().unwrap() > 0);
        let statm = super::resident_bytes().unwrap() as f64;
        let status = super::rss_bytes().unwrap() as f64;
        assert!((statm / status - 1.0).abs() < 0.5, "{statm} vs {status}");
        assert!(super::cpu_seconds().is_some());
        assert!(super::render().contains("lookout_process_cpu_seconds_total"));
    }
}
