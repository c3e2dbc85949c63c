//! CPU settings for training: the thread pool and flush-to-zero of denormal floats.
//!
//! Adam's first-moment estimate of a weight whose gradient is (nearly) always zero, such as the
//! weights of Fashion-MNIST's blank border pixels, decays by 0.9 per step into the denormal
//! range (below 1.2e-38) within two epochs. x86 CPUs compute on denormals through a microcode
//! assist, a hundred times slower: measured here, the reference MLP with Adam trained at 39,700
//! images/s in its first epoch and 18,000 by its fourth, while SGD held 47,000. Flushing
//! denormals to zero (what TensorFlow does by default and `torch.set_flush_denormal(True)` asks
//! PyTorch for) keeps the speed; values that small make no difference to training.

/// Makes this thread flush denormal results and inputs of float arithmetic to zero (x86-64:
/// MXCSR's FTZ and DAZ bits; aarch64: FPCR's FZ bit). A no-op on other architectures.
/// The setting is per thread: [`flush_denormals_on_compute_threads`] applies it to the compute
/// pool.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes this thread's SSE control register; FTZ (bit 15) and DAZ (bit 6)
    // only change how denormal floats are rounded, not memory or control flow.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, for FPCR's flush-to-zero bit (24).
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
        fpcr |= 1 << 24;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
    }
}

/// Flushes denormals on this thread and on every thread of the global compute pool (building
/// it with one thread per core if nothing built it yet). The training loops (`flint train`,
/// the experiments, fine-tuning) call it before their first step, so library users get the same
/// speed as the `flint` binary whoever built the pool; it is cheap and idempotent.
pub fn flush_denormals_on_compute_threads() {
    flush_denormals();
    rayon::broadcast(|_| flush_denormals());
}

/// Builds the global compute thread pool (burn-flex, gemm and flint's own parallel loops run on
/// it) with `threads` threads, or one per core, and flushes denormals on it and on the calling
/// thread. Returns an error if the pool was already built or its threads cannot be started
/// (say, too many for the address space): after that failure rayon refuses to build any global
/// pool, so the caller must stop rather than go on computing.
pub fn configure_threads(threads: Option<usize>) -> Result<(), String> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    builder.build_global().map_err(|e| match threads {
        Some(n) => format!("cannot start {n} compute threads ({e}); ask for fewer with --threads"),
        None => format!("cannot start the compute threads ({e})"),
    })?;
    flush_denormals_on_compute_threads();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormals_become_zero_after_flushing() {
        // In a thread of its own: the setting must not leak into other tests.
        std::thread::spawn(|| {
            let tiny = std::hint::black_box(1.0e-30f32);
            let scale = std::hint::black_box(1.0e-10f32);
            // black_box pins each product on its side of the flush: the compiler assumes the
            // default float environment and could otherwise move the arithmetic across it.
            let before = std::hint::black_box(tiny * scale);
            assert!(before.is_subnormal(), "{before}");
            flush_denormals();
            let after = std::hint::black_box(std::hint::black_box(tiny) * scale);
            if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
                assert_eq!(after.to_bits(), 0, "{after}");
                // DAZ: a denormal input counts as zero.
                assert!(std::hint::black_box(before) * 1.0e30 == 0.0);
            }
            // Normal numbers are untouched.
            assert_eq!(std::hint::black_box(1.5f32) * 2.0, 3.0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn every_compute_thread_flushes_after_the_pool_wide_call() {
        flush_denormals_on_compute_threads();
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            let products = rayon::broadcast(|_| {
                std::hint::black_box(std::hint::black_box(1.0e-30f32) * 1.0e-10).to_bits()
            });
            assert!(products.iter().all(|&bits| bits == 0), "{products:?}");
        }
    }
}
