//! Which layers each flint model has, for flint-layers' model-wide operations: max-norm
//! ([`MaxNormLayers`]), batch-norm recalibration and MC-dropout ([`BatchNormLayers`]). Each model
//! names its layers by field, so nothing is found by burn's type-name strings.

use burn::nn::BatchNorm as BurnBatchNorm;
use flint_layers::{BatchNorm, BatchNormLayers, MaxNormLayers, UnitWeights};

use crate::{
    Classifier, Cnn, ConvBlock, EfficientNetLite0, HiddenLayer, MbConvBlock, Mlp, MnistCnnBn,
    ResNet, ResNetBlock,
};

/// Implements both traits by listing the fields that hold the layers, in declaration order.
macro_rules! layers {
    ($model:ty, weights: [$($w:ident),*], norms: [$($n:ident),*]) => {
        impl MaxNormLayers for $model {
            fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
                $(self.$w.for_each_unit_weights(f);)*
            }
        }

        impl BatchNormLayers for $model {
            fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
                $(self.$n.for_each_batch_norm(f);)*
            }

            fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut BurnBatchNorm)) {
                $(self.$n.for_each_burn_batch_norm(f);)*
            }
        }
    };
}

layers!(HiddenLayer, weights: [linear], norms: [norm]);
layers!(Mlp, weights: [hidden, output], norms: [hidden]);
layers!(ConvBlock, weights: [conv], norms: [norm]);
layers!(Cnn, weights: [blocks, hidden, output], norms: [blocks]);
layers!(MnistCnnBn, weights: [conv1, conv2, conv3, fc1, fc2], norms: [norm1, norm2]);
layers!(
    MbConvBlock,
    weights: [_expand_conv, _depthwise_conv, _project_conv],
    norms: [_bn0, _bn1, _bn2]
);
layers!(
    EfficientNetLite0,
    weights: [_conv_stem, _blocks, _conv_head, _fc],
    norms: [_bn0, _blocks, _bn1]
);

layers!(
    ResNet,
    weights: [conv1, layer1, layer2, layer3, layer4, fc],
    norms: [bn1, layer1, layer2, layer3, layer4]
);

/// By hand: the shortcut is a `(Conv2d, BatchNorm)` pair (torchvision's `downsample.0/.1`).
impl MaxNormLayers for ResNetBlock {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        self.conv1.for_each_unit_weights(f);
        self.conv2.for_each_unit_weights(f);
        self.conv3.for_each_unit_weights(f);
        if let Some((conv, _)) = &mut self.downsample {
            conv.for_each_unit_weights(f);
        }
    }
}

impl BatchNormLayers for ResNetBlock {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        self.bn1.for_each_batch_norm(f);
        self.bn2.for_each_batch_norm(f);
        self.bn3.for_each_batch_norm(f);
        if let Some((_, bn)) = &mut self.downsample {
            bn.for_each_batch_norm(f);
        }
    }

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut BurnBatchNorm)) {
        self.bn1.for_each_burn_batch_norm(f);
        self.bn2.for_each_burn_batch_norm(f);
        self.bn3.for_each_burn_batch_norm(f);
        if let Some((_, bn)) = &mut self.downsample {
            bn.for_each_burn_batch_norm(f);
        }
    }
}

impl MaxNormLayers for Classifier {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        match self {
            Self::Mlp(m) => m.for_each_unit_weights(f),
            Self::Cnn(m) => m.for_each_unit_weights(f),
        }
    }
}

impl BatchNormLayers for Classifier {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        match self {
            Self::Mlp(m) => m.for_each_batch_norm(f),
            Self::Cnn(m) => m.for_each_batch_norm(f),
        }
    }

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut BurnBatchNorm)) {
        match self {
            Self::Mlp(m) => m.for_each_burn_batch_norm(f),
            Self::Cnn(m) => m.for_each_burn_batch_norm(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use flint_layers::visit::float_param_paths;

    use super::*;
    use crate::{
        CnnConfig, EfficientNetLite0Config, MlpConfig, MnistCnnBnConfig, ResNetArch, ResNetConfig,
    };

    /// Counts what a model names: every weight and batch norm it has must be listed.
    fn named<M: MaxNormLayers + BatchNormLayers>(model: &mut M) -> (usize, usize) {
        let mut weights = 0;
        model.for_each_unit_weights(&mut |_| weights += 1);
        let mut norms = 0;
        model.for_each_batch_norm(&mut |_| norms += 1);
        (weights, norms)
    }

    /// The same counts from the parameter paths (`…weight` of a kernel or matrix, and
    /// `…running_var` of each batch norm).
    fn from_paths<M: burn::module::Module>(model: &M) -> (usize, usize) {
        let paths = float_param_paths(model);
        let weights = paths
            .iter()
            .filter(|p| p.ends_with(".weight") || *p == "weight")
            .count();
        let norms = paths.iter().filter(|p| p.ends_with(".running_var")).count();
        (weights, norms)
    }

    #[test]
    fn every_model_names_all_its_layers() {
        let d = Device::flex();
        let mut mlp = Classifier::Mlp(
            MlpConfig::new()
                .with_hidden(vec![8, 4])
                .with_dropout(vec![0.1, 0.1])
                .with_batch_norm(true)
                .init(&d),
        );
        assert_eq!(named(&mut mlp), from_paths(&mlp));
        assert_eq!(named(&mut mlp), (3, 2));
        let mut cnn = Classifier::Cnn(CnnConfig::new().with_batch_norm(true).init(&d));
        assert_eq!(named(&mut cnn), from_paths(&cnn));
        let mut mnist = MnistCnnBnConfig::new().init(&d);
        assert_eq!(named(&mut mnist), (5, 2));
        assert_eq!(named(&mut mnist), from_paths(&mnist));
        let mut effnet = EfficientNetLite0Config::new().init(&d);
        assert_eq!(named(&mut effnet), from_paths(&effnet));
        for arch in [ResNetArch::ResNet18, ResNetArch::ResNet50] {
            let mut resnet = ResNetConfig::new(arch).with_num_classes(3).init(&d);
            assert_eq!(named(&mut resnet), from_paths(&resnet), "{arch}");
        }
    }
}
