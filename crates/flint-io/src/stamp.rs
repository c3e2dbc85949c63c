//! The names of run folders (`runs/<what>-20261202-054500`): sortable, readable, and the same
//! in every flint command.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder of a new run when the user names none: `runs/<name>-<YYYYMMDD-HHMMSS>` (UTC), so
/// runs sort by start time whatever made them (`flint train`, `flint finetune`).
pub fn run_dir(name: &str) -> PathBuf {
    PathBuf::from("runs").join(format!("{name}-{}", utc_stamp()))
}

/// The current UTC time as `YYYYMMDD-HHMMSS`.
pub fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    stamp_of(secs)
}

/// `secs` after the Unix epoch as `YYYYMMDD-HHMMSS` (UTC).
pub fn stamp_of(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(stamp_of(0), "19700101-000000");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(stamp_of(951_827_696), "20000229-123456");
        assert_eq!(stamp_of(1_796_190_300), "20261202-054500");
        let dir = run_dir("mnist-mlp").to_string_lossy().into_owned();
        assert!(dir.starts_with("runs/mnist-mlp-20") && dir.len() == "runs/mnist-mlp-".len() + 15);
    }
}
