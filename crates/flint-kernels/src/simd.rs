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

/// f32 values per 64-byte cache line.
const LINE: usize = 16;

/// Asks the CPU to bring the cache lines of `values[start..start + count]` (clipped to
/// `values`) into its L2 cache, without waiting: a kernel that computes on one plane in L1
/// prefetches the next plane meanwhile, so its first reads do not wait on memory. A hint only:
/// a no-op off x86-64.
#[inline(always)]
fn prefetch(values: &[f32], start: usize, count: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        let end = (start + count).min(values.len());
        for at in (start..end).step_by(LINE) {
            // SAFETY: `at < values.len()`, so the address is inside `values`; a prefetch only
            // hints the cache and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(values.as_ptr().add(at).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, start, count);
}

/// A prefetch spread over a computation: the cache lines of up to three slices (the next
/// plane's inputs), a few at each [`Ahead::step`] of a loop that computes on data already in
/// cache, so that the prefetches overlap the arithmetic instead of queueing in one burst.
pub(crate) struct Ahead<'a> {
    slices: [&'a [f32]; 3],
    slice: usize,
    at: usize,
    per_step: usize,
}

impl<'a> Ahead<'a> {
    /// All of `slices` over about `steps` calls of [`Ahead::step`].
    pub(crate) fn new(slices: [&'a [f32]; 3], steps: usize) -> Self {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        Self {
            slices,
            slice: 0,
            at: 0,
            // Whole lines, so that each step starts on a line of its own.
            per_step: total.div_ceil(steps.max(1)).next_multiple_of(LINE),
        }
    }

    /// Prefetches the next `per_step` values' lines.
    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let mut left = self.per_step;
        while left > 0 && self.slice < self.slices.len() {
            let slice = self.slices[self.slice];
            let n = left.min(slice.len() - self.at);
            prefetch(slice, self.at, n);
            (self.at, left) = (self.at + n, left - n);
            if self.at == slice.len() {
                (self.slice, self.at) = (self.slice + 1, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ahead;

    /// `steps` calls cover every slice (an empty one included) and no fewer calls do: the
    /// prefetch is spread over the whole loop, not issued in its first blocks.
    #[test]
    fn ahead_spreads_its_lines_over_the_steps() {
        let (a, c) = (vec![1.0f32; 1000], vec![2.0f32; 370]);
        let steps = 10;
        let mut ahead = Ahead::new([&a, &[], &c], steps);
        assert_eq!(
            ahead.per_step, 144,
            "1370 values over 10 steps, in whole lines"
        );
        for _ in 0..steps - 1 {
            ahead.step();
        }
        assert!(ahead.slice < 3, "done before the last step");
        ahead.step();
        assert_eq!(ahead.slice, 3, "not done after the last step");
        ahead.step();
        assert_eq!(
            (ahead.slice, ahead.at),
            (3, 0),
            "a step past the end does nothing"
        );
    }
}
