//! Token-id examples and length-bucketed batches.

use serde::{Deserialize, Serialize};

use crate::record::{answer_text, format_prompt, QaRecord};
use crate::rng::SeededRng;
use crate::Tokenizer;

/// One training or evaluation example as token ids, ready for `answer_logits` and `train_step`:
/// the one example type of cotune (the host re-exports it and converts it to the plugin ABI's
/// form at its boundary).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Example {
    /// The formatted prompt's ids; no special token (a model that wants `<bos>` prepends it).
    pub prompt: Vec<u32>,
    /// The ids of `" " + answer`, closed by the eos id so generation learns where to stop.
    pub answer: Vec<u32>,
}

impl Example {
    /// An example from prompt and answer ids.
    pub fn new(prompt: Vec<u32>, answer: Vec<u32>) -> Self {
        Self { prompt, answer }
    }

    /// Prompt plus answer length, what a decoder-only model pads to.
    pub fn len(&self) -> usize {
        self.prompt.len() + self.answer.len()
    }

    /// True if both parts are empty (never the case for an encoded record: the answer has eos).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes one record with the prompt template; prompt and answer are encoded separately so no
/// token straddles the boundary between what the model reads and what it must produce.
pub fn encode_example(tokenizer: &Tokenizer, template: &str, record: &QaRecord) -> Example {
    let mut answer = tokenizer.encode(&answer_text(record));
    answer.push(tokenizer.eos_id());
    Example {
        prompt: tokenizer.encode(&format_prompt(template, record)),
        answer,
    }
}

/// Groups example indices into batches of `batch_size` (the last may be smaller) with similar
/// lengths, so little compute goes to padding, and shuffles the batch order.
///
/// Indices are first shuffled with `seed`, then stably sorted by total length and answer
/// length, then cut into batches; so equal-length examples land in different batches for
/// different seeds (use the epoch in the seed). Every index appears exactly once.
///
/// # Panics
/// If `batch_size` is 0.
pub fn length_bucketed_batches(
    examples: &[Example],
    batch_size: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    assert!(
        batch_size > 0,
        "length_bucketed_batches needs batch_size > 0"
    );
    let mut rng = SeededRng::for_stream(seed, "batches");
    let mut order: Vec<usize> = (0..examples.len()).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&i| (examples[i].len(), examples[i].answer.len()));
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(prompt: usize, answer: usize) -> Example {
        Example {
            prompt: vec![7; prompt],
            answer: vec![8; answer],
        }
    }

    /// Padding positions when every batch is padded to its longest example.
    fn padding(examples: &[Example], batches: &[Vec<usize>]) -> usize {
        batches
            .iter()
            .map(|batch| {
                let longest = batch.iter().map(|&i| examples[i].len()).max().unwrap_or(0);
                batch
                    .iter()
                    .map(|&i| longest - examples[i].len())
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn every_index_once_and_little_padding() {
        let mut rng = SeededRng::for_stream(5, "lengths");
        let examples: Vec<Example> = (0..1003)
            .map(|_| example(5 + rng.below(40), 2 + rng.below(10)))
            .collect();
        let batches = length_bucketed_batches(&examples, 16, 1);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..examples.len()).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 16));
        assert_eq!(batches.len(), 1003usize.div_ceil(16));

        let naive: Vec<Vec<usize>> = (0..examples.len())
            .collect::<Vec<_>>()
            .chunks(16)
            .map(<[usize]>::to_vec)
            .collect();
        let (bucketed, unsorted) = (padding(&examples, &batches), padding(&examples, &naive));
        assert!(bucketed * 10 < unsorted, "{bucketed} vs {unsorted}");

        assert_eq!(batches, length_bucketed_batches(&examples, 16, 1));
        assert_ne!(batches, length_bucketed_batches(&examples, 16, 2));
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(length_bucketed_batches(&[], 4, 0).is_empty());
    }
}
