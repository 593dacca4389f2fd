//! Check 9: greedy generation with the cache agrees with recomputation.

use cotune_host::{Example, GenerateOptions, Model, Structure};

use crate::support::*;
use crate::Subject;

/// 9. Greedy output (with the key/value cache) equals step-by-step argmax recomputed through
///    `answer_logits` (tolerance 1e-4 on the chosen logit), stops at EOS, respects the cap.
pub fn generation(s: &Subject) -> Result<String, String> {
    let mut model = s.model(9)?;
    // A little training gives the model preferences, so argmax is not a coin toss.
    let batch = small_batch(&model, 10);
    train(&mut model, &batch, None, 5, options(1e-2))?;
    let v = vocab(&model);
    let mut t = Tokens(11);
    let prompts = vec![t.seq(5, v), t.seq(5, v), t.seq(8, v), t.seq(3, v)];
    let cap = 8u32;
    // An EOS id the model is unlikely to produce first: check the cap and argmax agreement.
    let never = GenerateOptions {
        max_new_tokens: cap,
        eos_id: v - 1,
    };
    let free = model.generate(&prompts, &never).map_err(e)?;
    verify_greedy(&model, &prompts, &free, &never)?;
    // Now stop at the token the first prompt produced third: output must end before it.
    let Some(&stop) = free[0].get(2) else {
        return Err(format!(
            "prompt 0 produced only {} tokens before EOS {}; cannot test stopping",
            free[0].len(),
            never.eos_id
        ));
    };
    let with_eos = GenerateOptions {
        max_new_tokens: cap,
        eos_id: stop,
    };
    let stopped = model.generate(&prompts, &with_eos).map_err(e)?;
    let expected: Vec<u32> = free[0].iter().copied().take_while(|&x| x != stop).collect();
    if stopped[0] != expected {
        return Err(format!(
            "with EOS {stop}, prompt 0 gave {:?}, expected {:?}",
            stopped[0], expected
        ));
    }
    verify_greedy(&model, &prompts, &stopped, &with_eos)?;
    let one = GenerateOptions {
        max_new_tokens: 1,
        eos_id: v - 1,
    };
    let short = model.generate(&prompts, &one).map_err(e)?;
    if short.iter().any(|o| o.len() > 1) {
        return Err("max_new_tokens = 1 produced more than one token".into());
    }
    Ok(format!(
        "4 prompts, cap {cap}: cached greedy = uncached argmax; stops at EOS {stop} after {} tokens",
        expected.len()
    ))
}

fn verify_greedy(
    model: &Model,
    prompts: &[Vec<u32>],
    outputs: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<(), String> {
    for (i, (prompt, out)) in prompts.iter().zip(outputs).enumerate() {
        if out.len() > opts.max_new_tokens as usize {
            return Err(format!("output {i} exceeds the cap: {} tokens", out.len()));
        }
        let mut answer = out.clone();
        let hit_eos = out.len() < opts.max_new_tokens as usize;
        if hit_eos {
            answer.push(opts.eos_id);
        }
        if answer.is_empty() {
            continue;
        }
        if out.contains(&opts.eos_id) {
            return Err(format!("output {i} contains the EOS id {}", opts.eos_id));
        }
        let ctx = model.spec().context_len as usize;
        if model.spec().structure == Structure::DecoderOnly && prompt.len() + answer.len() > ctx {
            continue;
        }
        let logits = model
            .answer_logits(&[Example::new(prompt.clone(), answer.clone())])
            .map_err(e)?;
        for (j, &tok) in answer.iter().enumerate() {
            let row = logits.row(0, j);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if row[tok as usize] < max - 1e-4 {
                return Err(format!(
                    "prompt {i}, step {j}: generation chose {tok} (logit {}), but the uncached argmax logit is {max}",
                    row[tok as usize]
                ));
            }
        }
    }
    Ok(())
}
