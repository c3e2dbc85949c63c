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

/// This machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`); `None` where it
/// cannot be read (not Linux).
pub fn total_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&info)
}

fn parse_meminfo_total(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line["MemTotal:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Bytes as people read them: `1.2 TB`-style with binary units (`23.4 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What a model needs in memory, as a plain count of float32 copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryUse {
    /// Inference: the weights once.
    Inference,
    /// Training a batch of this many samples: weights, gradients and two optimiser moments
    /// (Adam's), and each layer's output and its gradient for the batch.
    Training { batch: usize },
}

/// Refuses a model that cannot fit in this machine's memory, before anything is allocated,
/// with the size in the message. A lower bound (burn's own buffers come on top), so a model it
/// lets through may still be too big, but one it refuses never fits.
pub fn check_model_memory(
    model: &flint_models::ModelConfig,
    usage: MemoryUse,
) -> Result<(), crate::TrainError> {
    let Some(total) = total_memory_bytes() else {
        return Ok(());
    };
    check_model_memory_within(model, usage, total)
}

/// [`check_model_memory`] against `total` bytes.
pub fn check_model_memory_within(
    model: &flint_models::ModelConfig,
    usage: MemoryUse,
    total: u64,
) -> Result<(), crate::TrainError> {
    let size = model
        .size()
        .map_err(|e| crate::TrainError::Config(e.to_string()))?;
    let params = size.parameters as u128 * 4;
    let (needed, what) = match usage {
        MemoryUse::Inference => (params, "its weights".to_string()),
        MemoryUse::Training { batch } => (
            params * 4 + size.activations_per_sample as u128 * 4 * 2 * batch as u128,
            format!(
                "training at batch {batch} (weights, gradients and optimiser state, and each layer's output and gradient)"
            ),
        ),
    };
    if needed > total as u128 {
        let needed = u64::try_from(needed).unwrap_or(u64::MAX);
        return Err(crate::TrainError::Config(format!(
            "the {} has {} parameters; {what} need at least {}, more than this machine's {} of memory{}",
            model.kind(),
            size.parameters,
            human_bytes(needed),
            human_bytes(total),
            match usage {
                MemoryUse::Training { .. } => "; use a smaller model or --batch-size",
                MemoryUse::Inference => "",
            }
        )));
    }
    Ok(())
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
    fn models_too_big_for_memory_are_refused_with_their_size() {
        use flint_models::{CnnConfig, MlpConfig, ModelConfig};
        let gib = 1u64 << 30;
        let reference = ModelConfig::reference("cnn").unwrap();
        assert!(
            check_model_memory_within(&reference, MemoryUse::Training { batch: 128 }, 24 * gib)
                .is_ok()
        );
        let wide = ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![100_000_000]));
        let msg = check_model_memory_within(&wide, MemoryUse::Inference, 24 * gib)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid configuration: the mlp has 79500000010 parameters; its weights need at least 296.2 GiB, more than this machine's 24.0 GiB of memory"
        );
        let deep = ModelConfig::Cnn(CnnConfig::new().with_channels(vec![100_000, 100_000]));
        assert!(
            check_model_memory_within(&deep, MemoryUse::Training { batch: 1 }, 24 * gib).is_err()
        );
        // The reference cnn fits at batch 128 but not with the whole 60,000 images in one batch
        // on a 24 GiB machine.
        let msg =
            check_model_memory_within(&reference, MemoryUse::Training { batch: 60_000 }, 24 * gib)
                .unwrap_err()
                .to_string();
        assert!(msg.contains("training at batch 60000"), "{msg}");
        assert!(
            msg.ends_with("use a smaller model or --batch-size"),
            "{msg}"
        );
    }

    #[test]
    fn meminfo_and_byte_formats() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_resident_set() {
        let m = resident_memory().unwrap();
        assert!(m.current_mib > 0.0 && m.peak_mib >= m.current_mib, "{m:?}");
    }
}
