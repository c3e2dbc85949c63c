//! `Device::seed` makes every stochastic layer repeatable: the same seed gives the same masks
//! and noise, another seed others. burn's generator is process-wide, so this file holds one
//! test and runs in a process of its own.

mod common;

use burn::nn::LinearConfig;
use burn::tensor::{Device, Tensor};
use common::{positive_input, train_device, values};
use flint_layers::{
    AlphaDropoutConfig, DropBlock2dConfig, DropConnectConfig, DropPathConfig, DropoutConfig,
    FeatureAlphaDropoutConfig, GaussianDropoutConfig, SpatialDropoutConfig,
};

type Layer = Box<dyn Fn(Tensor<4>) -> Tensor<4>>;

#[test]
fn the_same_seed_gives_the_same_draws() {
    let device = train_device();
    // Large enough for several of flint's parallel random streams (65,536 elements each).
    let input = positive_input([8, 16, 32, 32], &device);
    let drop_connect = DropConnectConfig::new(LinearConfig::new(32, 32), 0.3).init(&device);
    let layers: Vec<(&str, Layer)> = vec![
        ("Dropout", {
            let l = DropoutConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("SpatialDropout", {
            let l = SpatialDropoutConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("AlphaDropout", {
            let l = AlphaDropoutConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("FeatureAlphaDropout", {
            let l = FeatureAlphaDropoutConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("GaussianDropout", {
            let l = GaussianDropoutConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("DropPath", {
            let l = DropPathConfig::new(0.3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("DropBlock2d", {
            let l = DropBlock2dConfig::new(0.3, 3).init();
            Box::new(move |x| l.forward(x))
        }),
        ("DropConnect", Box::new(move |x| drop_connect.forward(x))),
    ];
    let draw = |layer: &Layer, seed: u64| {
        Device::seed(&device, seed);
        values(&layer(input.clone()))
    };
    for (name, layer) in &layers {
        // A first call initialises lazy parameters (DropConnect's weight), which draws from
        // the same generator.
        let _ = layer(input.clone());
        let first = draw(layer, 7);
        assert!(first == draw(layer, 7), "{name}: seed 7 twice differs");
        assert!(first != draw(layer, 8), "{name}: seeds 7 and 8 agree");
        assert!(first != values(&input), "{name} changed nothing");
    }
}
