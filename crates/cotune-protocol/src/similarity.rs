//! The device's choice of public questions for the `public` transfer set under
//! `train.transfer_select = "similar"`: the server sends every public question, the device keeps
//! the ones closest to its own, so its questions never leave it.
//!
//! Closeness is the cosine between TF-IDF vectors of prompt token ids: a token's weight in a
//! prompt is its count times `ln((1 + n) / (1 + df)) + 1`, where `n` is the number of prompts
//! (candidates and the device's own) and `df` the number holding the token; each prompt's vector
//! is normalised to length 1, the device's own are averaged into one centroid, and a candidate's
//! score is its dot product with that centroid. Tokens every prompt shares (the template) weigh
//! least. The order is by score, then by position among the candidates, so the choice is
//! deterministic.

use std::collections::HashMap;

use cotune_host::Example;

/// Indices of the `k` candidates (at most all of them) whose prompts are closest to `own`'s,
/// best first.
pub fn most_similar(own: &[Example], candidates: &[Example], k: usize) -> Vec<usize> {
    let k = k.min(candidates.len());
    if own.is_empty() || k == 0 {
        return (0..k).collect();
    }
    let n = (own.len() + candidates.len()) as f64;
    let mut df: HashMap<u32, f64> = HashMap::new();
    for e in own.iter().chain(candidates) {
        let mut seen: Vec<u32> = e.prompt.clone();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1.0;
        }
    }
    let idf = |t: u32| ((1.0 + n) / (1.0 + df.get(&t).copied().unwrap_or(0.0))).ln() + 1.0;
    let vector = |e: &Example| -> Vec<(u32, f64)> {
        let mut counts: Vec<(u32, f64)> = Vec::new();
        let mut ids = e.prompt.clone();
        ids.sort_unstable();
        for t in ids {
            match counts.last_mut() {
                Some((last, c)) if *last == t => *c += 1.0,
                _ => counts.push((t, 1.0)),
            }
        }
        for (t, c) in &mut counts {
            *c *= idf(*t);
        }
        let norm = counts.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut counts {
                *w /= norm;
            }
        }
        counts
    };
    let mut centroid: HashMap<u32, f64> = HashMap::new();
    for e in own {
        for (t, w) in vector(e) {
            *centroid.entry(t).or_default() += w / own.len() as f64;
        }
    }
    let mut scored: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let score = vector(e)
                .iter()
                .map(|(t, w)| w * centroid.get(t).copied().unwrap_or(0.0))
                .sum::<f64>();
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(prompt: &[u32]) -> Example {
        Example::new(prompt.to_vec(), vec![1])
    }

    #[test]
    fn picks_the_candidates_sharing_the_devices_distinctive_tokens() {
        // Token 1 is the template every prompt holds; 10-12 are the device's topic, 20-22 another.
        let own = [ex(&[1, 10, 11]), ex(&[1, 11, 12]), ex(&[1, 10, 12])];
        let candidates = [
            ex(&[1, 20, 21]),
            ex(&[1, 10, 11]),
            ex(&[1, 21, 22]),
            ex(&[1, 12, 30]),
            ex(&[1, 20, 22]),
        ];
        assert_eq!(most_similar(&own, &candidates, 2), vec![1, 3]);
        // Asking for more than there are returns every candidate, best first, ties by position.
        let all = most_similar(&own, &candidates, 10);
        assert_eq!(all.len(), 5);
        assert_eq!(&all[..2], &[1, 3]);
        assert_eq!(&all[2..], &[0, 2, 4]);
    }

    #[test]
    fn without_own_questions_the_first_candidates_are_kept() {
        let candidates = [ex(&[1]), ex(&[2]), ex(&[3])];
        assert_eq!(most_similar(&[], &candidates, 2), vec![0, 1]);
        assert!(most_similar(&[ex(&[1])], &candidates, 0).is_empty());
    }
}
