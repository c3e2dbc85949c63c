//! Library set-up leaves the floating-point modes alone: building flint's compute pool without
//! the `unsafe` opt-in changes no thread's MXCSR. In a test binary of its own, because the
//! global pool can be built once per process.

#[cfg(target_arch = "x86_64")]
#[test]
fn building_the_compute_pool_leaves_mxcsr_alone() {
    use flint_train::cpu::{ComputeThreads, flushes_denormals, mxcsr};

    // The control bits; the low six are sticky exception flags that arithmetic sets.
    let control = |csr: u32| csr & !0x3f;
    let before = mxcsr();
    assert!(
        !flushes_denormals(),
        "the test harness starts with flush-to-zero on"
    );
    ComputeThreads::new()
        .threads(2)
        .build_global()
        .expect("nothing else in this process built the global pool");
    assert_eq!(control(mxcsr()), control(before), "the calling thread");
    // The caller is the pool's first thread: its parallel loops run on it, not handed over.
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), 2);
    let workers = rayon::broadcast(|_| mxcsr());
    assert_eq!(workers.len(), 2);
    for worker in workers {
        assert_eq!(control(worker), control(before), "a compute thread");
    }
    let product = std::hint::black_box(std::hint::black_box(1.0e-30f32) * 1.0e-10);
    assert!(product.is_subnormal(), "{product}");
}
