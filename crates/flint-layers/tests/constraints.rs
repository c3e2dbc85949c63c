//! Max-norm and L1/L2 penalties.

mod common;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor};
use common::{plain_device, train_device, values};
use flint_layers::{
    BatchNorm, BatchNormConfig, DropConnect, DropConnectConfig, MaxNormConfig, MaxNormLayers,
    UnitWeights, WeightPenalty,
};
use proptest::prelude::*;

#[derive(Module, Debug)]
struct Net {
    conv: Conv2d,
    bn: BatchNorm,
    hidden: DropConnect,
    head: Linear,
}

impl MaxNormLayers for Net {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        self.conv.for_each_unit_weights(f);
        self.hidden.for_each_unit_weights(f);
        self.head.for_each_unit_weights(f);
    }
}

fn net(device: &burn::tensor::Device, spread: f64) -> Net {
    let scaled =
        |numel: usize| Tensor::<1>::random([numel], Distribution::Normal(0.0, spread), device);
    let mut conv = Conv2dConfig::new([3, 4], [3, 3]).init(device);
    conv.weight = Param::from_tensor(scaled(108).reshape([4, 3, 3, 3]));
    let mut hidden = DropConnectConfig::new(LinearConfig::new(6, 5), 0.5).init(device);
    hidden.linear.weight = Param::from_tensor(scaled(30).reshape([6, 5]));
    let mut head = LinearConfig::new(5, 3).init(device);
    head.weight = Param::from_tensor(scaled(15).reshape([5, 3]));
    Net {
        conv,
        bn: BatchNormConfig::new(4).init(device),
        hidden,
        head,
    }
}

/// L2 norms of the unit vectors: columns of a `[in, out]` weight.
fn column_norms(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .map(|j| {
            (0..rows)
                .map(|i| f64::from(w[i * cols + j]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

fn check_unit_vectors(
    before: &[f32],
    after: &[f32],
    units: Vec<Vec<usize>>,
    cap: f64,
) -> Result<(), TestCaseError> {
    for unit in units {
        let norm = unit
            .iter()
            .map(|&i| f64::from(before[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let new_norm = unit
            .iter()
            .map(|&i| f64::from(after[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        prop_assert!(
            new_norm <= cap * (1.0 + 1e-5),
            "norm {new_norm} above cap {cap}"
        );
        for &i in &unit {
            if norm <= cap {
                prop_assert_eq!(before[i], after[i], "a unit under the cap was changed");
            } else {
                let expected = f64::from(before[i]) * cap / norm;
                prop_assert!(
                    (f64::from(after[i]) - expected).abs() <= 1e-5 * (1.0 + expected.abs())
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After `apply`, no unit's incoming norm is above the cap, units under it are untouched
    /// bit for bit, and units over it are rescaled onto the cap (direction kept); found in
    /// conv, DropConnect and linear layers alike; biases and BN parameters are left alone.
    #[test]
    fn max_norm_caps_and_leaves_small_units(spread in 0.05f64..2.0, cap in 0.1f64..3.0, seed in any::<u64>()) {
        let device = plain_device();
        device.seed(seed);
        let model = net(&device, spread);
        let constrained = MaxNormConfig::new(cap).init().apply(model.clone());

        let (before, after) = (values(&model.head.weight.val()), values(&constrained.head.weight.val()));
        check_unit_vectors(&before, &after, (0..3).map(|j| (0..5).map(|i| i * 3 + j).collect()).collect(), cap)?;
        let (before, after) = (values(&model.hidden.linear.weight.val()), values(&constrained.hidden.linear.weight.val()));
        check_unit_vectors(&before, &after, (0..5).map(|j| (0..6).map(|i| i * 5 + j).collect()).collect(), cap)?;
        let (before, after) = (values(&model.conv.weight.val()), values(&constrained.conv.weight.val()));
        check_unit_vectors(&before, &after, (0..4).map(|o| (o * 27..(o + 1) * 27).collect()).collect(), cap)?;

        prop_assert_eq!(values(&model.head.bias.as_ref().unwrap().val()), values(&constrained.head.bias.as_ref().unwrap().val()));
        prop_assert_eq!(values(&model.bn.gamma.as_ref().unwrap().val()), values(&constrained.bn.gamma.as_ref().unwrap().val()));
    }
}

#[test]
fn max_norm_keeps_weights_trainable() {
    let device = train_device();
    let model = MaxNormConfig::new(0.01).init().apply(net(&device, 1.0));
    assert!(model.head.weight.val().is_require_grad());
    assert!(model.conv.weight.val().is_require_grad());
    let norms = column_norms(&values(&model.head.weight.val()), 5, 3);
    assert!(norms.iter().all(|&n| n <= 0.01 * (1.0 + 1e-5)), "{norms:?}");
}

/// A user type called `Linear` is not mistaken for burn's: max-norm constrains only what the
/// model names through `MaxNormLayers` (it once matched burn's `"Struct:Linear"` type string).
#[test]
fn max_norm_ignores_a_user_type_named_linear() {
    mod user {
        #[derive(burn::module::Module, Debug)]
        pub struct Linear {
            pub weight: burn::module::Param<burn::tensor::Tensor<2>>,
        }
    }
    #[derive(Module, Debug)]
    struct Wrapper {
        table: user::Linear,
    }
    impl MaxNormLayers for Wrapper {
        fn for_each_unit_weights(&mut self, _f: &mut dyn FnMut(UnitWeights<'_>)) {}
    }
    let device = plain_device();
    let weight = Tensor::<2>::ones([4, 2], &device).mul_scalar(10.0);
    let model = Wrapper {
        table: user::Linear {
            weight: Param::from_tensor(weight.clone()),
        },
    };
    let model = MaxNormConfig::new(1.0).init().apply(model);
    assert_eq!(values(&model.table.weight.val()), values(&weight));
}

/// The penalty is `l1 Σ|w| + l2 Σw²` over `weight` parameters only, and its gradient is
/// `l1 sign(w) + 2 l2 w` on the weights and nothing on biases.
#[test]
fn weight_penalty_value_and_gradient() {
    let device = train_device();
    device.seed(1);
    let model = net(&device, 1.0);
    let (l1, l2) = (0.01, 0.05);
    let penalty = WeightPenalty::new(l1, l2).penalty(&model, &device);

    let weights = [
        values(&model.conv.weight.val()),
        values(&model.hidden.linear.weight.val()),
        values(&model.head.weight.val()),
    ];
    let expected: f64 = weights
        .iter()
        .flatten()
        .map(|&w| l1 * f64::from(w).abs() + l2 * f64::from(w).powi(2))
        .sum();
    let got = f64::from(values(&penalty)[0]);
    assert!(
        (got - expected).abs() <= 1e-5 * expected,
        "{got} vs {expected}"
    );

    let grads = penalty.backward();
    let head = values(&model.head.weight.val());
    let grad = values(&model.head.weight.grad(&grads).unwrap());
    for (&w, &g) in head.iter().zip(&grad) {
        let expected = l1 * f64::from(w).signum() + 2.0 * l2 * f64::from(w);
        assert!((f64::from(g) - expected).abs() <= 1e-5, "{g} vs {expected}");
    }
    assert!(model.head.bias.as_ref().unwrap().grad(&grads).is_none());
    assert!(model.bn.gamma.as_ref().unwrap().grad(&grads).is_none());
}
