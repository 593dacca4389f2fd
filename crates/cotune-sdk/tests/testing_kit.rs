//! The test kit (`cotune_sdk::testing`) on a model small enough to break on purpose: each check
//! passes on the sound model and fails, with a message that names what differed, on a model
//! with the flaw the check exists to catch.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cotune_sdk::abi::{GenerateOptions, Logits};
use cotune_sdk::burn;
use cotune_sdk::burn::module::Module;
use cotune_sdk::burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use cotune_sdk::burn::tensor::{Device, Int, Tensor};
use cotune_sdk::testing::{
    self, argmax_row, assert_cached_decoding_matches, assert_generation_matches_argmax,
    assert_loss_falls, assert_padding_changes_nothing, config_with, example, max_abs_diff, overfit,
    refusal, trainer, values,
};
use cotune_sdk::{Decoder, LanguageModel, Memory, Structure, Trainer};

/// The configuration of [`Pair`].
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PairConfig {
    vocab_size: usize,
    width: usize,
    /// `forgets-cache`: every cached call starts as if nothing came before it.
    /// `sees-future`: every position also gets the mean of the whole sequence, padding included.
    #[serde(default)]
    flaw: Option<String>,
}

/// A previous-token model: `hidden_t = embed[x_t] + previous(embed[x_(t-1)])`,
/// `logits_t = head(hidden_t)`; the cache is the last token's embedding.
#[derive(Module, Debug)]
struct Pair {
    embed: Embedding,
    previous: Linear,
    head: Linear,
    forgets_cache: bool,
    sees_future: bool,
}

/// The last embedding `[b, 1, width]` and the number of tokens seen.
#[derive(Default)]
struct PairCache {
    last: Option<Tensor<3>>,
    tokens: usize,
}

impl Decoder for Pair {
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        _memory: Option<&Memory>,
        cache: Option<&mut PairCache>,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let x = self.embed.forward(tokens);
        let width = x.dims()[2];
        let before = match cache.as_deref() {
            Some(PairCache {
                last: Some(last), ..
            }) if !self.forgets_cache => last.clone(),
            _ => Tensor::zeros([b, 1, width], &x.device()),
        };
        let shifted = match t {
            1 => before,
            _ => Tensor::cat(vec![before, x.clone().narrow(1, 0, t - 1)], 1),
        };
        let mut hidden = x.clone() + self.previous.forward(shifted);
        if self.sees_future {
            hidden = hidden + x.clone().mean_dim(1);
        }
        if let Some(cache) = cache {
            cache.last = Some(x.narrow(1, t - 1, 1));
            cache.tokens += t;
        }
        hidden
    }

    fn empty_cache(&self) -> PairCache {
        PairCache::default()
    }
}

impl LanguageModel for Pair {
    type Config = PairConfig;
    type Cache = PairCache;
    const ARCHITECTURE: &'static str = "pair";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    const EXAMPLE_CONFIG: &'static str = "vocab_size = 16\nwidth = 16\n";

    cotune_sdk::decoder_methods!();

    fn validate(c: &PairConfig) -> Result<(), String> {
        cotune_sdk::config::positive(&[("vocab_size", c.vocab_size), ("width", c.width)])?;
        match c.flaw.as_deref() {
            None => Ok(()),
            Some(flaw) => {
                cotune_sdk::config::one_of("flaw", flaw, &["forgets-cache", "sees-future"])
            }
        }
    }

    fn init(c: &PairConfig, device: &Device) -> Self {
        Pair {
            embed: EmbeddingConfig::new(c.vocab_size, c.width).init(device),
            previous: LinearConfig::new(c.width, c.width).init(device),
            head: LinearConfig::new(c.width, c.vocab_size).init(device),
            forgets_cache: c.flaw.as_deref() == Some("forgets-cache"),
            sees_future: c.flaw.as_deref() == Some("sees-future"),
        }
    }

    fn vocab_size(c: &PairConfig) -> usize {
        c.vocab_size
    }

    fn context_len(_: &PairConfig) -> usize {
        16
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head.forward(hidden)
    }
}

fn pair(flaw: Option<&str>) -> Trainer<Pair> {
    let flaw = flaw.map(|f| format!("\"{f}\""));
    let overrides: Vec<(&str, &str)> = flaw.iter().map(|f| ("flaw", f.as_str())).collect();
    trainer::<Pair>(&config_with::<Pair>(&overrides, ""), 3)
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("the check passed");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    }
}

fn assert_contains(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn config_overrides_replace_add_and_stay_out_of_tables() {
    assert_eq!(
        config_with::<Pair>(&[("width", "4"), ("flaw", "\"x\"")], "[lora]\nrank = 2\n"),
        "vocab_size = 16\nwidth = 4\nflaw = \"x\"\n[lora]\nrank = 2\n"
    );
    // A key is replaced only by its own name: `vocab` is not `vocab_size`.
    assert_eq!(
        config_with::<Pair>(&[("vocab", "3")], ""),
        "vocab_size = 16\nwidth = 16\nvocab = 3\n"
    );
    let message = panic_message(|| {
        config_with::<Pair>(&[("width = 4", "5")], "");
    });
    assert_contains(&message, &["\"width = 4\"", "5", "not a bare TOML key"]);
}

#[test]
fn configs_build_or_are_refused_by_name() {
    let message = refusal::<Pair>(&config_with::<Pair>(&[("width", "0")], ""));
    assert_eq!(message, "pair config: `width` must be positive, got 0");
    let message = panic_message(|| {
        refusal::<Pair>(Pair::EXAMPLE_CONFIG);
    });
    assert_contains(&message, &["pair", "was accepted", "vocab_size = 16"]);
    let message = panic_message(|| {
        trainer::<Pair>("vocab_size = 16\nwidth = -1\n", 0);
    });
    assert_contains(&message, &["pair", "does not build", "width", "-1"]);
}

#[test]
fn comparisons_never_pass_a_nan_and_name_mismatched_lengths() {
    assert_eq!(max_abs_diff(&[1.0, -2.0, 3.0], &[1.5, -2.0, 1.0]), 2.0);
    assert_eq!(
        max_abs_diff(&[1.0, f32::NAN], &[1.0, f32::NAN]),
        f32::INFINITY
    );
    let message = panic_message(|| {
        max_abs_diff(&[1.0, 2.0, 3.0], &[1.0]);
    });
    assert_contains(&message, &["3 against 1"]);

    let logits = Logits::new(
        2,
        2,
        3,
        vec![0.0, 5.0, 1.0, 2.0, 2.0, 1.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    assert_eq!(argmax_row(&logits, 0), [1, 0]);
    assert_eq!(argmax_row(&logits, 1), [0, 0]);
    let message = panic_message(|| {
        argmax_row(&logits, 2);
    });
    assert_contains(&message, &["example 2", "batch of 2"]);

    assert_eq!(
        values(testing::tokens(&[&[1, 2], &[3, 4]]).float()),
        [1.0, 2.0, 3.0, 4.0]
    );
    let message = panic_message(|| {
        testing::tokens(&[&[1, 2], &[3]]);
    });
    assert_contains(&message, &["2 tokens", "[3] has 1"]);
}

#[test]
fn cached_decoding_is_checked_chunk_by_chunk() {
    let tokens = || testing::tokens(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]);
    let sound = pair(None);
    assert_cached_decoding_matches(
        &sound.model().valid(),
        tokens(),
        None,
        &[2, 1, 2],
        1e-6,
        |c| c.tokens,
    );

    let forgetful = pair(Some("forgets-cache"));
    let message = panic_message(|| {
        assert_cached_decoding_matches(
            &forgetful.model().valid(),
            tokens(),
            None,
            &[2, 1, 2],
            1e-6,
            |c| c.tokens,
        )
    });
    assert_contains(&message, &["pair", "positions 2..3", "tolerance 1e-6"]);

    // A cache that miscounts its tokens.
    let message = panic_message(|| {
        assert_cached_decoding_matches(&sound.model().valid(), tokens(), None, &[2, 3], 1e-6, |c| {
            c.tokens.min(3)
        })
    });
    assert_contains(&message, &["after positions 0..5 the cache holds 3 tokens"]);

    let message = panic_message(|| {
        assert_cached_decoding_matches(&sound.model().valid(), tokens(), None, &[2, 2], 1e-6, |c| {
            c.tokens
        })
    });
    assert_contains(&message, &["chunks [2, 2]", "5 tokens"]);
}

#[test]
fn generation_is_checked_against_the_full_pass() {
    let prompts = vec![vec![1, 2], vec![4, 5], vec![6, 7, 8]];
    let options = GenerateOptions {
        max_new_tokens: 5,
        eos_id: 0,
    };
    // Token 3 is followed by 4 after a 2 and by 5 after a 4: only the previous token, which
    // generation reads from the cache, tells them apart.
    let batch = [example(&[1, 2], &[3, 4, 3, 5, 0])];
    let mut sound = pair(None);
    overfit(&mut sound, &batch, 60);
    let generated = assert_generation_matches_argmax(&sound, &prompts, &options);
    assert_eq!(generated[0], [3, 4, 3, 5]);

    let mut forgetful = pair(Some("forgets-cache"));
    overfit(&mut forgetful, &batch, 60);
    let message = panic_message(|| {
        drop(assert_generation_matches_argmax(
            &forgetful, &prompts, &options,
        ))
    });
    assert_contains(&message, &["pair", "prompt [", "argmax differs"]);
}

#[test]
fn padding_is_checked() {
    let short = example(&[1, 2], &[3, 4]);
    let long = example(&[5, 6, 7, 8], &[9, 10, 11]);
    assert_padding_changes_nothing(&pair(None), &short, &long, 1e-5);
    let message = panic_message(|| {
        assert_padding_changes_nothing(&pair(Some("sees-future")), &short, &long, 1e-5)
    });
    assert_contains(
        &message,
        &["pair", "padding changed the short example's logits"],
    );
    let message =
        panic_message(|| assert_padding_changes_nothing(&pair(None), &short, &short, 1e-5));
    assert_contains(&message, &["must be longer"]);
}

#[test]
fn a_falling_loss_is_checked() {
    let batch = [example(&[1, 2, 3], &[4, 5, 0]), example(&[6, 7], &[8, 0])];
    let losses = assert_loss_falls(&mut pair(None), &batch, 30, 0.5);
    assert_eq!(losses.len(), 30);
    // One step cannot halve it.
    let message = panic_message(|| drop(assert_loss_falls(&mut pair(None), &batch, 2, 0.5)));
    assert_contains(&message, &["pair", "2 steps", "not below 0.5 x the first"]);
}
