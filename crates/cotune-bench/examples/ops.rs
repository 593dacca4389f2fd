//! Per-operation timings at the bench shape: burn's operation against `cotune_sdk::ops`.
//!
//! `cargo run -p cotune-bench --example ops` prints the median milliseconds of each operation
//! (forward only on plain tensors, and forward plus backward under autodiff).

use cotune_sdk::burn::tensor::activation as act;
use cotune_sdk::burn::tensor::{Device, Distribution, Tensor};
use cotune_sdk::{nn, ops};
use std::time::Instant;

const REPS: usize = 30;

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[REPS / 2]
}

fn row(name: &str, burn: f64, ours: f64) {
    println!("| {name} | {burn:.3} | {ours:.3} | {:.1}x |", burn / ours);
}

fn main() {
    let plain = Device::flex();
    let ad = Device::flex().autodiff();
    let random = |dims: [usize; 3], device: &Device| {
        Tensor::<3>::random(dims, Distribution::Uniform(-1.0, 1.0), device)
    };
    // GPT-2 bench shape: batch 16 x 63 positions, width 128, MLP 512, 4 heads of 32.
    let x = random([16, 63, 128], &plain);
    let w = Tensor::<2>::random([128, 512], Distribution::Default, &plain);
    let h = random([16, 63, 512], &plain);
    let scores = Tensor::<4>::random([16, 4, 63, 63], Distribution::Default, &plain);
    let gamma = Tensor::<1>::ones([128], &plain);
    let beta = Tensor::<1>::zeros([128], &plain);
    println!("| operation | burn ms | cotune ms | speed-up |\n|---|---|---|---|");
    let x2 = x.clone().reshape([16 * 63, 128]);
    row(
        "matmul [1008,128]x[128,512]",
        median_ms(|| drop(x2.clone().matmul(w.clone()).into_data())),
        median_ms(|| drop(ops::matmul(x2.clone(), w.clone()).into_data())),
    );
    row(
        "softmax [16,4,63,63]",
        median_ms(|| drop(act::softmax(scores.clone(), 3).into_data())),
        median_ms(|| drop(ops::softmax(scores.clone()).into_data())),
    );
    row(
        "gelu_new [16,63,512]",
        median_ms(|| drop(nn::gelu_new_composed(h.clone()).into_data())),
        median_ms(|| drop(ops::gelu_new(h.clone()).into_data())),
    );
    let eps = 1e-5;
    let (xa, wa, ha) = (
        Tensor::<3>::from_data(x.into_data(), &ad).require_grad(),
        Tensor::<2>::from_data(w.into_data(), &ad).require_grad(),
        Tensor::<3>::from_data(h.into_data(), &ad).require_grad(),
    );
    let sa = Tensor::<4>::from_data(scores.into_data(), &ad).require_grad();
    let (ga, ba) = (
        Tensor::<1>::from_data(gamma.into_data(), &ad),
        Tensor::<1>::from_data(beta.into_data(), &ad),
    );
    // Every backward consumes its graph: each repetition builds its own from the leaves.
    let xa2 = || xa.clone().reshape([16 * 63, 128]);
    row(
        "matmul fwd+bwd",
        median_ms(|| drop(xa2().matmul(wa.clone()).sum().backward())),
        median_ms(|| drop(ops::matmul(xa2(), wa.clone()).sum().backward())),
    );
    row(
        "softmax fwd+bwd",
        median_ms(|| drop(act::softmax(sa.clone(), 3).sum().backward())),
        median_ms(|| drop(ops::softmax(sa.clone()).sum().backward())),
    );
    row(
        "log_softmax [16,63,512] fwd+bwd",
        median_ms(|| drop(act::log_softmax(ha.clone(), 2).sum().backward())),
        median_ms(|| drop(ops::log_softmax(ha.clone()).sum().backward())),
    );
    row(
        "gelu_new fwd+bwd",
        median_ms(|| drop(nn::gelu_new_composed(ha.clone()).sum().backward())),
        median_ms(|| drop(ops::gelu_new(ha.clone()).sum().backward())),
    );
    let layer_norm = |x: Tensor<3>| {
        let mean = x.clone().mean_dim(2);
        let c = x - mean;
        let var = c.clone().square().mean_dim(2);
        c / (var + eps).sqrt() * ga.clone().unsqueeze() + ba.clone().unsqueeze()
    };
    row(
        "layer_norm [16,63,128] fwd+bwd",
        median_ms(|| drop(layer_norm(xa.clone()).sum().backward())),
        median_ms(|| {
            drop(
                ops::layer_norm(xa.clone(), ga.clone(), Some(ba.clone()), eps)
                    .sum()
                    .backward(),
            )
        }),
    );
}
