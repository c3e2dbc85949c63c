//! Resident memory of this process, for the per-epoch metrics and the benchmark protocol.

/// Resident set sizes of this process, in MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidentMemory {
    /// Resident now (`VmRSS`).
    pub current_mib: f64,
    /// Peak resident since the process started (`VmHWM`, the high-water mark).
    pub peak_mib: f64,
}

/// Reads `/proc/self/status`; `None` where it does not exist (not Linux) or cannot be parsed.
pub fn resident_memory() -> Option<ResidentMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<ResidentMemory> {
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let value = line[key.len()..].trim().strip_suffix("kB")?.trim();
        value.parse::<f64>().ok()
    };
    Some(ResidentMemory {
        current_mib: kib("VmRSS:")? / 1024.0,
        peak_mib: kib("VmHWM:")? / 1024.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_status_format() {
        let status = "Name:\tflint\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        let m = parse_status(status).unwrap();
        assert_eq!(m.current_mib, 100.0);
        assert_eq!(m.peak_mib, 200.0);
        assert_eq!(parse_status("VmRSS:\tlots\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_resident_set() {
        let m = resident_memory().unwrap();
        assert!(m.current_mib > 0.0 && m.peak_mib >= m.current_mib, "{m:?}");
    }
}
