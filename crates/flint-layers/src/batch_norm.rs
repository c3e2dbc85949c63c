//! Batch normalisation with PyTorch's options (Ioffe & Szegedy 2015).

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::{Device, Tensor};

use crate::error::{LayerConfigError, or_panic};
use crate::mode::is_training;

/// Configuration of a [`BatchNorm`] layer, field for field PyTorch's `nn.BatchNorm1d/2d/3d`.
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// Number of channels `C` of the `[N, C, ...]` input.
    pub num_features: usize,
    /// Added to the variance for numerical stability, finite and positive.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Weight of the new batch in the running statistics' update, in `[0, 1]` (PyTorch's
    /// convention, the complement of ONNX's and Keras'). `None`: a cumulative moving average,
    /// each batch weighted `1 / num_batches_tracked`.
    #[config(default = "Some(0.1)")]
    pub momentum: Option<f64>,
    /// Learnable per-channel `gamma` (init 1) and `beta` (init 0).
    #[config(default = true)]
    pub affine: bool,
    /// Keep running statistics for inference. Without them, batch statistics are used in
    /// inference too, as PyTorch does.
    #[config(default = true)]
    pub track_running_stats: bool,
    /// Update the running variance with the unbiased batch variance (`n / (n - 1)` times the
    /// biased one), as PyTorch does. `false` uses the biased one, as burn's `BatchNorm` and the
    /// ONNX `BatchNormalization` reference do. Normalisation always uses the biased variance.
    #[config(default = true)]
    pub unbiased_running_var: bool,
}

impl BatchNormConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), LayerConfigError> {
        if self.num_features == 0 {
            return Err(LayerConfigError::Zero {
                layer: "BatchNorm",
                field: "num_features",
            });
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(LayerConfigError::NotPositive {
                layer: "BatchNorm",
                field: "eps",
                value: self.eps,
            });
        }
        if let Some(momentum) = self.momentum
            && !(momentum.is_finite() && (0.0..=1.0).contains(&momentum))
        {
            return Err(LayerConfigError::Momentum {
                layer: "BatchNorm",
                value: momentum,
            });
        }
        Ok(())
    }

    /// Checks the configuration and builds the layer.
    pub fn try_init(&self, device: &Device) -> Result<BatchNorm, LayerConfigError> {
        self.validate()?;
        let c = self.num_features;
        let param = |value: f32| Param::from_tensor(Tensor::<1>::full([c], value, device));
        let state =
            |value: f32, len: usize| RunningState::new(Tensor::<1>::full([len], value, device));
        let tracked = self.track_running_stats;
        Ok(BatchNorm {
            gamma: self.affine.then(|| param(1.0)),
            beta: self.affine.then(|| param(0.0)),
            running_mean: tracked.then(|| state(0.0, c)),
            running_var: tracked.then(|| state(1.0, c)),
            num_batches_tracked: tracked.then(|| state(0.0, 1)),
            training: Param::from_bool(true),
            num_features: c,
            eps: self.eps,
            momentum: self.momentum,
            unbiased_running_var: self.unbiased_running_var,
        })
    }

    /// Builds the layer.
    ///
    /// # Panics
    ///
    /// With [`validate`](Self::validate)'s message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> BatchNorm {
        or_panic(self.try_init(device))
    }
}

/// Batch normalisation over the channel axis of `[N, C, ...]` inputs: PyTorch's
/// `BatchNorm1d` (`[N, C]`, `[N, C, L]`), `BatchNorm2d` (`[N, C, H, W]`) and `BatchNorm3d`.
///
/// `y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta`, with the batch's mean and biased variance
/// in training and the running ones in inference. Training updates
/// `running = (1 - m) running + m batch` (`m = 1 / num_batches_tracked` when momentum is
/// `None`) with the **unbiased** batch variance by default, as PyTorch does; burn's own
/// `BatchNorm` uses the biased one, so its running variance drifts from PyTorch's.
///
/// Parameter names are burn's (`gamma`, `beta`, `running_mean`, `running_var`), so burn-store's
/// `PyTorchToBurnAdapter` maps PyTorch's `weight`/`bias`. `num_batches_tracked` is kept as a
/// one-element float tensor (PyTorch: an int64 scalar); with a fixed momentum it only counts.
///
/// Training mode follows burn's rule ([`is_training`]): autodiff device and training flag.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// Learnable scale, `None` when not affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// Learnable shift, `None` when not affine.
    pub beta: Option<Param<Tensor<1>>>,
    /// Running mean, `None` when running statistics are not tracked.
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// Running (by default unbiased) variance, `None` when not tracked.
    pub running_var: Option<RunningState<Tensor<1>>>,
    /// Number of training batches seen, `[1]`; drives the cumulative average.
    pub num_batches_tracked: Option<RunningState<Tensor<1>>>,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
    /// Number of channels.
    pub num_features: usize,
    /// Variance epsilon.
    pub eps: f64,
    /// Update weight of the new batch; `None` for the cumulative average.
    pub momentum: Option<f64>,
    /// Whether the running variance is updated with the unbiased batch variance.
    pub unbiased_running_var: bool,
}

impl BatchNorm {
    /// Normalises the input.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, num_features, ...]` (rank 2 or more)
    /// - output: same as input
    ///
    /// # Panics
    ///
    /// If the channel axis is not `num_features`, or in training with a single value per channel
    /// (the batch variance would be undefined; PyTorch raises the same error).
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        assert!(
            D >= 2,
            "BatchNorm expects [batch, channels, ...], got rank {D}"
        );
        let dims = input.dims();
        assert_eq!(
            dims[1], self.num_features,
            "BatchNorm: expected {} channels on axis 1, got input shape {dims:?}",
            self.num_features
        );
        let device = input.device();
        let (gamma, beta) = self.affine_or_identity(&device);
        let training = is_training(&self.training, &device);

        if !training && let (Some(mean), Some(var)) = (&self.running_mean, &self.running_var) {
            // value_sync: value() can miss the latest update() (loaded weights, the last batch).
            return burn::tensor::module::batch_norm(
                input,
                gamma,
                beta,
                mean.value_sync().to_device(&device),
                var.value_sync().to_device(&device),
                self.eps,
            );
        }

        let per_channel = dims.iter().product::<usize>() / self.num_features;
        assert!(
            !training || per_channel > 1,
            "BatchNorm: expected more than 1 value per channel when training, got input shape {dims:?}"
        );
        let (output, mean, variance) =
            match flint_kernels::batch_norm_train(&input, &gamma, &beta, self.eps) {
                Some(result) => (result.output, result.mean, result.variance),
                None => {
                    let result =
                        burn::tensor::module::batch_norm_train(input, gamma, beta, self.eps);
                    (result.output, result.mean, result.variance)
                }
            };
        if training {
            self.update_running_stats(mean, variance, per_channel, &device);
        }
        output
    }

    /// Resets the running statistics to mean 0, variance 1 and no batches seen
    /// (PyTorch's `reset_running_stats`).
    pub fn reset_running_stats(&self) {
        let c = self.num_features;
        if let (Some(mean), Some(var), Some(count)) = (
            &self.running_mean,
            &self.running_var,
            &self.num_batches_tracked,
        ) {
            let device = mean.value().device();
            mean.update(Tensor::zeros([c], &device));
            var.update(Tensor::ones([c], &device));
            count.update(Tensor::zeros([1], &device));
        }
    }

    /// The affine parameters, or ones and zeros when the layer is not affine.
    fn affine_or_identity(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let c = self.num_features;
        let gamma = match &self.gamma {
            Some(gamma) => gamma.val(),
            None => Tensor::ones([c], device),
        };
        let beta = match &self.beta {
            Some(beta) => beta.val(),
            None => Tensor::zeros([c], device),
        };
        (gamma, beta)
    }

    fn update_running_stats(
        &self,
        batch_mean: Tensor<1>,
        batch_var: Tensor<1>,
        per_channel: usize,
        device: &Device,
    ) {
        let (Some(mean), Some(var), Some(count)) = (
            &self.running_mean,
            &self.running_var,
            &self.num_batches_tracked,
        ) else {
            return;
        };
        let seen = count.value_sync().to_device(device).add_scalar(1.0);
        count.update(seen.clone().detach());

        let batch_var = if self.unbiased_running_var {
            batch_var.mul_scalar(per_channel as f64 / (per_channel - 1) as f64)
        } else {
            batch_var
        };
        // running + factor (batch - running) == (1 - factor) running + factor batch.
        let blend = |running: Tensor<1>, batch: Tensor<1>| {
            let step = batch.detach() - running.clone();
            let step = match self.momentum {
                Some(m) => step.mul_scalar(m),
                // Kept on the device: 1 / count without a host round-trip.
                None => step / seen.clone(),
            };
            (running + step).detach()
        };
        mean.update(blend(mean.value_sync().to_device(device), batch_mean));
        var.update(blend(var.value_sync().to_device(device), batch_var));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn rejects_zero_features() {
        let err = BatchNormConfig::new(0).try_init(&device()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchNorm: num_features must be at least 1, got 0"
        );
    }

    #[test]
    fn rejects_non_positive_eps() {
        for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
            let err = BatchNormConfig::new(3)
                .with_eps(eps)
                .validate()
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("BatchNorm: eps must be finite and positive, got {eps}")
            );
        }
    }

    #[test]
    fn rejects_momentum_outside_unit_interval() {
        for momentum in [-0.1, 1.1, f64::NAN] {
            let err = BatchNormConfig::new(3)
                .with_momentum(Some(momentum))
                .validate()
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "BatchNorm: momentum must be finite and in [0, 1] (or None for a cumulative average), got {momentum}"
                )
            );
        }
        assert!(
            BatchNormConfig::new(3)
                .with_momentum(None)
                .validate()
                .is_ok()
        );
        assert!(
            BatchNormConfig::new(3)
                .with_momentum(Some(1.0))
                .validate()
                .is_ok()
        );
    }

    #[test]
    #[should_panic(expected = "BatchNorm: num_features must be at least 1, got 0")]
    fn init_panics_with_the_same_message() {
        BatchNormConfig::new(0).init(&device());
    }

    #[test]
    #[should_panic(expected = "expected more than 1 value per channel when training")]
    fn training_on_one_value_per_channel_panics() {
        let device = device().autodiff();
        let bn = BatchNormConfig::new(3).init(&device);
        bn.forward(Tensor::<2>::ones([1, 3], &device));
    }

    #[test]
    fn no_affine_and_no_tracking_hold_no_state() {
        let bn = BatchNormConfig::new(3)
            .with_affine(false)
            .with_track_running_stats(false)
            .init(&device());
        assert!(bn.gamma.is_none() && bn.beta.is_none());
        assert!(bn.running_mean.is_none() && bn.num_batches_tracked.is_none());
    }
}
