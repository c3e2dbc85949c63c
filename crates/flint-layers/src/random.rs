//! The random masks and noise of the stochastic layers, drawn fast on the CPU backends.
//!
//! burn-flex (and burn-ndarray) fill a random tensor one element at a time through a sampler
//! rebuilt for every element on one thread: about 14 ns per element, a quarter of the reference
//! MLP's training time. On those backends flint draws on the host instead: xoshiro256++ streams
//! of 65,536 elements each, filled in parallel, seeded with one draw from burn's generator, so
//! `Device::seed` still makes a run repeatable and the result does not depend on the thread
//! count. Every other backend (wgpu, CUDA, ...) keeps burn's own on-device generator, which is
//! fast there and avoids a host-to-device copy.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution as _, StandardNormal};
use rayon::prelude::*;

/// Elements per independent random stream. Fixed, so the values do not depend on how the
/// streams are spread over threads.
const STREAM: usize = 1 << 16;

/// A tensor of `shape` whose elements are `value` with probability `keep` and 0 otherwise: a
/// dropout mask with the rescaling already in it.
pub(crate) fn bernoulli<const D: usize>(
    shape: [usize; D],
    keep: f64,
    value: f32,
    device: &Device,
) -> Tensor<D> {
    if !draws_on_host(device) {
        return Tensor::<D>::random(shape, Distribution::Bernoulli(keep), device).mul_scalar(value);
    }
    // Compare 32-bit draws with keep * 2^32: exact to 2^-32, two elements per 64-bit draw.
    let threshold = (keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    let values = fill(shape.iter().product(), seed(device), |rng, out| {
        // Branch-free: a kept/dropped branch would be mispredicted half the time at p = 0.5.
        let pick = |bits: u64| value * f32::from(u8::from(bits < threshold));
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = rand::Rng::next_u64(rng);
            pair[0] = pick(bits & 0xffff_ffff);
            pair[1] = pick(bits >> 32);
        }
        if let [last] = pairs.into_remainder() {
            *last = pick(rand::Rng::next_u64(rng) & 0xffff_ffff);
        }
    });
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A tensor of `shape` drawn from the normal distribution N(`mean`, `std`²).
pub(crate) fn normal<const D: usize>(
    shape: [usize; D],
    mean: f64,
    std: f64,
    device: &Device,
) -> Tensor<D> {
    if !draws_on_host(device) {
        return Tensor::<D>::random(shape, Distribution::Normal(mean, std), device);
    }
    let values = fill(shape.iter().product(), seed(device), |rng, out| {
        for slot in out {
            let z: f64 = StandardNormal.sample(rng);
            *slot = (mean + std * z) as f32;
        }
    });
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Whether `device` is a CPU backend whose own generator is the slow per-element one.
fn draws_on_host(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    let device = device.clone().inner();
    #[cfg(feature = "ndarray")]
    if matches!(device.as_dispatch(), DispatchDevice::NdArray(_)) {
        return true;
    }
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
}

/// A 60-bit seed from burn's generator (two 30-bit draws: burn's default integers may be
/// 32-bit), so burn's seeding governs flint's streams too.
fn seed(device: &Device) -> u64 {
    let draws = Tensor::<1, Int>::random(
        [2],
        Distribution::Uniform(0.0, 1_073_741_824.0),
        &device.clone().inner(),
    )
    .into_data()
    .convert::<i64>();
    let draws = draws.as_slice::<i64>().expect("two i64 draws");
    ((draws[0] as u64) << 30) ^ (draws[1] as u64)
}

/// `n` values, written stream by stream by `draw`; streams run in parallel when there are
/// several.
fn fill<F>(n: usize, seed: u64, draw: F) -> Vec<f32>
where
    F: Fn(&mut Xoshiro256PlusPlus, &mut [f32]) + Sync,
{
    let mut values = vec![0.0f32; n];
    let stream = |(index, chunk): (usize, &mut [f32])| {
        // seed_from_u64 runs the seed through SplitMix64, so neighbouring seeds give unrelated
        // streams.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        draw(&mut rng, chunk);
    };
    if n > STREAM {
        values.par_chunks_mut(STREAM).enumerate().for_each(stream);
    } else {
        values.chunks_mut(STREAM).enumerate().for_each(stream);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn bernoulli_has_the_asked_rate_and_value() {
        let device = Device::flex();
        for keep in [0.1, 0.5, 0.8] {
            let n = 200_000;
            let mask = values(bernoulli([n], keep, 2.5, &device));
            let kept = mask.iter().filter(|&&v| v == 2.5).count();
            assert_eq!(kept + mask.iter().filter(|&&v| v == 0.0).count(), n);
            // 5 standard deviations of a binomial count.
            let sd = (n as f64 * keep * (1.0 - keep)).sqrt();
            assert!(
                (kept as f64 - n as f64 * keep).abs() < 5.0 * sd,
                "keep {keep}: {kept} of {n}"
            );
        }
        assert!(
            values(bernoulli([1000], 1.0, 1.0, &device))
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(
            values(bernoulli([1000], 0.0, 1.0, &device))
                .iter()
                .all(|&v| v == 0.0)
        );
    }

    #[test]
    fn normal_has_the_asked_moments() {
        let device = Device::flex();
        let n = 200_000;
        let x = values(normal([n], 1.5, 0.5, &device));
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (mean - 1.5).abs() < 5.0 * 0.5 / (n as f64).sqrt(),
            "mean {mean}"
        );
        assert!((var - 0.25).abs() < 0.01, "variance {var}");
        let beyond = x.iter().filter(|&&v| (v - 1.5).abs() > 1.0).count() as f64 / n as f64;
        // P(|z| > 2) = 4.55 %.
        assert!((beyond - 0.0455).abs() < 0.003, "tail {beyond}");
    }

    #[test]
    fn streams_differ_and_positions_are_uncorrelated() {
        let device = Device::flex();
        // Three streams' worth: each stream must start somewhere new.
        let mask = values(bernoulli([3 * STREAM], 0.5, 1.0, &device));
        let (a, b) = (&mask[..STREAM], &mask[STREAM..2 * STREAM]);
        assert_ne!(a, b);
        // Neighbouring elements agree about half the time.
        let agree = mask.windows(2).filter(|w| w[0] == w[1]).count() as f64;
        let rate = agree / (mask.len() - 1) as f64;
        assert!((rate - 0.5).abs() < 0.01, "neighbours agree {rate}");
    }
}
