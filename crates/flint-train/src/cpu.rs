//! The compute thread pool, and flush-to-zero of denormal floats as an explicit opt-in.
//!
//! Adam's first-moment estimate of a weight whose gradient is (nearly) always zero, such as the
//! weights of Fashion-MNIST's blank border pixels, decays by 0.9 per step into the denormal
//! range (below 1.2e-38) within two epochs. x86 CPUs compute on denormals through a microcode
//! assist, a hundred times slower: measured here, the reference MLP with Adam trained at 39,700
//! images/s in its first epoch and 18,000 by its fourth, while SGD held 47,000. Flushing
//! denormals to zero (what TensorFlow does by default and `torch.set_flush_denormal(True)` asks
//! PyTorch for) keeps the speed; values that small make no difference to training.
//!
//! Flushing is never done behind the caller's back: it changes the results of every float
//! operation on the flushed threads, the program's other code included, and Rust documents
//! changing the floating-point environment as undefined behaviour. Building the pool
//! ([`ComputeThreads::build_global`]) leaves the floating-point modes alone; a program that wants
//! the speed asks for it with the `unsafe` [`ComputeThreads::flush_denormals`]. The `flint`
//! binary does (and `--keep-denormals` turns it off); flint's libraries never do.

use rayon::{ThreadPool, ThreadPoolBuildError, ThreadPoolBuilder};

/// Why the compute threads could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ThreadPoolError {
    /// The asked-for number of threads could not be started (say, too many for the address
    /// space), or a global pool was already built.
    #[error("cannot start {threads} compute threads ({source})")]
    Threads {
        threads: usize,
        #[source]
        source: ThreadPoolBuildError,
    },
    /// One thread per core could not be started, or a global pool was already built.
    #[error("cannot start the compute threads ({source})")]
    PerCore {
        #[source]
        source: ThreadPoolBuildError,
    },
}

/// Settings of the compute thread pool, on which burn-flex, gemm and flint's own parallel loops
/// run: the number of threads and whether they flush denormals to zero.
///
/// ```
/// use flint_train::cpu::ComputeThreads;
///
/// // A library or test: a pool of two threads with IEEE floating point, as Rust assumes.
/// let pool = ComputeThreads::new().threads(2).build()?;
/// assert_eq!(pool.current_num_threads(), 2);
/// assert!(!pool.install(flint_train::cpu::flushes_denormals));
/// # Ok::<(), flint_train::cpu::ThreadPoolError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ComputeThreads {
    threads: Option<usize>,
    flush_denormals: bool,
}

impl ComputeThreads {
    /// One thread per core, floating-point modes left alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// `threads` threads instead of one per core (0 means one per core, as in rayon).
    pub fn threads(self, threads: usize) -> Self {
        Self {
            threads: (threads > 0).then_some(threads),
            ..self
        }
    }

    /// Makes each thread of the pool, from its start, flush denormal results and inputs of float
    /// arithmetic to zero (x86-64: MXCSR's FTZ and DAZ bits; aarch64: FPCR's FZ bit; nothing
    /// elsewhere), and [`build_global`](Self::build_global) the calling thread too. Training with
    /// Adam keeps its speed (see the module docs); results differ only where a value would have
    /// been denormal (below about 1.2e-38 in f32, 2.2e-308 in f64).
    ///
    /// # Safety
    /// Rust assumes the default floating-point environment: it may compute float expressions at
    /// compile time, and libraries may rely on gradual underflow, so code running with these
    /// modes can get results that differ from the same code's compile-time ones or its own
    /// assumptions; Rust documents this as undefined behaviour. The caller must be the program
    /// itself (a binary's set-up, not a library acting for its user), must call this before its
    /// threads compute anything that depends on the modes, and must accept that every piece of
    /// code that runs on the flushed threads, flint's, burn's or any other crate's, computes
    /// with denormals as zero. The setting stays for the life of those threads.
    pub unsafe fn flush_denormals(self) -> Self {
        Self {
            flush_denormals: true,
            ..self
        }
    }

    /// Builds rayon's global pool with these settings, the calling thread being its first
    /// thread (rayon's `use_current_thread`): `threads(n)` means the caller and `n - 1` more.
    /// Fails if its threads cannot be started or a global pool already exists (anything that ran
    /// a parallel loop before builds one); after a failure to start threads rayon refuses every
    /// later use of the global pool, so the caller should stop rather than go on computing.
    ///
    /// Why the caller is in the pool: a program computes on its main thread, and every parallel
    /// operation started from a thread outside the pool is handed to a pool thread while the
    /// caller sleeps on a latch. A training step of the reference MLP starts about a hundred
    /// such operations (burn-flex's element-wise kernels, gemm, flint's kernels), so with
    /// two compute threads three threads took turns on two cores: measured here, 94,000
    /// context switches in one epoch and two threads 40 % slower than one. Inside the pool the
    /// caller runs each operation itself, splitting it with the other threads only where it is
    /// split, and one thread means no other thread at all. Work that other threads (a data
    /// loader) hand to the pool runs on the remaining threads, and on the caller only while it
    /// waits inside a parallel operation of its own: with `threads(1)` there is no remaining
    /// thread, so a caller that blocks on another thread (a loader's channel) while that thread
    /// waits for a parallel loop it started would wait forever. flint's loader threads start
    /// none (decoding, transforms and batching are sequential per batch; the loader's threads
    /// are the parallelism), and code that adds one must keep that true or ask for two threads.
    pub fn build_global(self) -> Result<(), ThreadPoolError> {
        self.builder()
            .use_current_thread()
            .build_global()
            .map_err(|source| self.error(source))?;
        if self.flush_denormals {
            // SAFETY: asked for by the caller of the unsafe `flush_denormals`, whose contract
            // covers the calling thread.
            unsafe { set_flush_to_zero() };
        }
        Ok(())
    }

    /// A pool of its own with these settings (the calling thread is left alone).
    pub fn build(self) -> Result<ThreadPool, ThreadPoolError> {
        self.builder().build().map_err(|source| self.error(source))
    }

    fn builder(self) -> ThreadPoolBuilder {
        let mut builder = ThreadPoolBuilder::new();
        if let Some(threads) = self.threads {
            builder = builder.num_threads(threads);
        }
        if self.flush_denormals {
            // SAFETY: the caller of the unsafe `flush_denormals` accepted the modes on these
            // threads; the start handler runs before the thread takes any work.
            builder = builder.start_handler(|_| unsafe { set_flush_to_zero() });
        }
        builder
    }

    fn error(self, source: ThreadPoolBuildError) -> ThreadPoolError {
        match self.threads {
            Some(threads) => ThreadPoolError::Threads { threads, source },
            None => ThreadPoolError::PerCore { source },
        }
    }
}

/// Whether the calling thread flushes denormal floats to zero (x86-64: MXCSR's FTZ or DAZ bit;
/// aarch64: FPCR's FZ bit; `false` elsewhere). Reading the modes changes nothing.
pub fn flushes_denormals() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr() & (FTZ | DAZ) != 0
    }
    #[cfg(target_arch = "aarch64")]
    {
        let fpcr: u64;
        // SAFETY: reads this thread's floating-point control register.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        fpcr & FZ != 0
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

#[cfg(target_arch = "x86_64")]
const FTZ: u32 = 1 << 15;
#[cfg(target_arch = "x86_64")]
const DAZ: u32 = 1 << 6;
#[cfg(target_arch = "aarch64")]
const FZ: u64 = 1 << 24;

/// The calling thread's MXCSR, the SSE control and status register (x86-64): bits 6-15 are the
/// modes (rounding, flush-to-zero, denormals-are-zero, exception masks), bits 0-5 sticky
/// exception flags.
#[cfg(target_arch = "x86_64")]
pub fn mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stores this thread's MXCSR into `csr`; nothing else is read or written.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
    csr
}

/// Sets flush-to-zero (and, on x86-64, denormals-are-zero) on the calling thread.
///
/// # Safety
/// That of [`ComputeThreads::flush_denormals`], for the calling thread.
unsafe fn set_flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: writes this thread's MXCSR with only FTZ and DAZ added; the caller accepts the
    // modes' effect on float results.
    unsafe {
        let csr = mxcsr() | FTZ | DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, for FPCR's flush-to-zero bit.
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
        fpcr |= FZ;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A denormal product, computed where it is called (black_box keeps the compiler, which
    /// assumes the default modes, from folding it at compile time).
    fn denormal_product() -> f32 {
        std::hint::black_box(std::hint::black_box(1.0e-30f32) * std::hint::black_box(1.0e-10))
    }

    #[test]
    fn a_pool_built_without_opting_in_keeps_denormals() {
        let pool = ComputeThreads::new().threads(2).build().unwrap();
        #[cfg(target_arch = "x86_64")]
        let before = mxcsr();
        let products = pool.broadcast(|_| (denormal_product(), flushes_denormals()));
        for (product, flushes) in products {
            assert!(product.is_subnormal(), "{product}");
            assert!(!flushes);
        }
        #[cfg(target_arch = "x86_64")]
        {
            // The control bits; the low six are sticky exception flags that arithmetic sets.
            let control = |csr: u32| csr & !0x3f;
            assert_eq!(
                control(mxcsr()),
                control(before),
                "the caller's modes changed"
            );
            let workers = pool.broadcast(|_| mxcsr());
            assert!(
                workers.iter().all(|&w| control(w) == control(before)),
                "workers' MXCSR {workers:x?}, the caller's {before:#x}"
            );
        }
    }

    #[test]
    fn opting_in_flushes_every_thread_of_the_pool_and_not_the_caller() {
        // SAFETY: the pool is this test's own; its threads run only the checks below.
        let pool = unsafe { ComputeThreads::new().threads(2).flush_denormals() }
            .build()
            .unwrap();
        let products = pool.broadcast(|_| (denormal_product(), flushes_denormals()));
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            for (product, flushes) in products {
                assert_eq!(product.to_bits(), 0, "{product}");
                assert!(flushes);
            }
            // Normal numbers are untouched.
            assert_eq!(pool.install(|| std::hint::black_box(1.5f32) * 2.0), 3.0);
        }
        assert!(!flushes_denormals(), "the calling thread was changed");
        assert!(denormal_product().is_subnormal());
    }
}
