//! Loops compiled per instruction set. The crate is built for the x86-64 baseline (SSE2), on
//! which LLVM turns a loop with a select (a clamp, a masked gradient) into compares and branches
//! over one element at a time, and keeps a plain f32 sum in one register. [`multiversion!`]
//! compiles a loop for AVX-512 and AVX2 as well and picks one at run time.

/// Defines `$name` as `$body` compiled for AVX-512 or AVX2 where the CPU has them (checked at
/// run time, once per call), for the baseline otherwise. The three bracketed groups are the
/// generic arguments `$body` gets on each (empty, or e.g. `::<32, 16>`): block widths that fit
/// each instruction set's registers. `$body` must be `#[inline(always)]`.
macro_rules! multiversion {
    (
        $name:ident => $body:ident [$($avx512:tt)*] [$($avx2:tt)*] [$($baseline:tt)*]
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
    ) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body $($avx512)* ($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body $($avx2)* ($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body $($baseline)* ($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Values summed in f32 before the running sum moves to f64.
pub(crate) const BLOCK: usize = 256;

/// `Σ values`: 16 f32 lanes over blocks of [`BLOCK`] values, each block's total added in f64.
/// The lanes break the one long chain of dependent additions that a plain sum is.
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f64 {
    values
        .chunks(BLOCK)
        .map(|block| {
            let mut lanes = [0.0f32; 16];
            let chunks = block.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().sum();
            for x in chunks {
                for lane in 0..16 {
                    lanes[lane] += x[lane];
                }
            }
            (lanes.iter().sum::<f32>() + tail) as f64
        })
        .sum()
}
