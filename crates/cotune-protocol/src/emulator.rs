//! A proxy cut from the LLM itself (`[dpm] init = "llm-layers"`): the emulator of
//! Offsite-Tuning. The DPM has the LLM's family and width and fewer layers; it takes the LLM's
//! embeddings, final norm and head as they are, and for each of its layers one of the LLM's,
//! evenly spaced from the first to the last. Distillation from the LLM then repairs what the
//! dropped layers did.
//!
//! Works from parameter names alone, so any plugin whose stacks of layers are named
//! `<stack>.<index>.<rest>` (`model.layers.3.mlp.up_proj.weight`, `h.3.attn.c_attn.weight`,
//! `encoder.block.1.layer.0.SelfAttention.q.weight`) qualifies: the first all-digit segment of a
//! name is its layer index, what comes before it names its stack (an encoder-decoder has two).
//! Every other parameter is copied by name. A DPM parameter the LLM lacks, a shape that differs,
//! or a stack deeper in the DPM than in the LLM is refused, naming the tensor.

use std::collections::HashMap;

use anyhow::{bail, Context};
use cotune_host::{Model, NamedTensor, ParamSelection};

/// A parameter name split at its layer index: `(stack, index, rest)`.
fn split_layer(name: &str) -> Option<(String, usize, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let k = parts
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let index = parts[k].parse().ok()?;
    Some((parts[..k].join("."), index, parts[k + 1..].join(".")))
}

/// Layers per stack: one more than the highest index named.
fn depths(params: &[NamedTensor]) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for p in params {
        if let Some((stack, index, _)) = split_layer(p.name.as_str()) {
            let d = out.entry(stack).or_default();
            *d = (*d).max(index + 1);
        }
    }
    out
}

/// The LLM layer DPM layer `j` of `dpm_depth` takes, of `llm_depth`: evenly spaced, the first
/// and the last included.
pub fn source_layer(j: usize, dpm_depth: usize, llm_depth: usize) -> usize {
    if dpm_depth <= 1 {
        return 0;
    }
    let x = j as f64 * (llm_depth - 1) as f64 / (dpm_depth - 1) as f64;
    (x.round() as usize).min(llm_depth - 1)
}

/// The DPM's parameters (names and shapes of `dpm`) filled from the LLM's (`llm`).
pub fn cut_params(llm: &[NamedTensor], dpm: &[NamedTensor]) -> anyhow::Result<Vec<NamedTensor>> {
    let by_name: HashMap<&str, &NamedTensor> = llm.iter().map(|p| (p.name.as_str(), p)).collect();
    let (llm_depths, dpm_depths) = (depths(llm), depths(dpm));
    let mut out = Vec::with_capacity(dpm.len());
    for p in dpm {
        let name = p.name.as_str();
        let source = match split_layer(name) {
            Some((stack, j, rest)) => {
                let d = dpm_depths[&stack];
                let Some(&l) = llm_depths.get(&stack) else {
                    bail!("the DPM's layer stack `{stack}` (from {name}) is not in the LLM");
                };
                if d > l {
                    bail!(
                        "the DPM's stack `{stack}` has {d} layers, more than the LLM's {l}: \
                         a proxy cut from the LLM keeps a subset of its layers"
                    );
                }
                let i = source_layer(j, d, l);
                if stack.is_empty() {
                    format!("{i}.{rest}")
                } else if rest.is_empty() {
                    format!("{stack}.{i}")
                } else {
                    format!("{stack}.{i}.{rest}")
                }
            }
            None => name.to_string(),
        };
        let Some(src) = by_name.get(source.as_str()) else {
            bail!("the DPM's parameter {name} has no counterpart {source} in the LLM");
        };
        if src.shape.as_slice() != p.shape.as_slice() {
            bail!(
                "the DPM's parameter {name} has shape {:?} but the LLM's {source} has {:?}: a \
                 proxy cut from the LLM needs its width (and vocabulary)",
                p.shape.as_slice(),
                src.shape.as_slice()
            );
        }
        out.push(NamedTensor::new(
            name,
            p.shape.to_vec(),
            src.data.as_slice().to_vec(),
        ));
    }
    Ok(out)
}

/// Overwrites `dpm`'s parameters with the layers cut from `llm` (see the module docs).
pub fn cut_from(llm: &Model, dpm: &mut Model) -> anyhow::Result<()> {
    let source = llm.export_params(ParamSelection::All)?;
    let target = dpm.export_params(ParamSelection::All)?;
    let params = cut_params(&source, &target).with_context(|| {
        format!(
            "cutting the DPM {} from the LLM {}",
            dpm.label(),
            llm.label()
        )
    })?;
    dpm.import_params(&params)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[u64], fill: f32) -> NamedTensor {
        let n: u64 = shape.iter().product();
        NamedTensor::new(name, shape.to_vec(), vec![fill; n as usize])
    }

    #[test]
    fn layers_are_evenly_spaced_first_and_last_kept() {
        let picks: Vec<usize> = (0..3).map(|j| source_layer(j, 3, 6)).collect();
        assert_eq!(picks, [0, 3, 5]);
        let picks: Vec<usize> = (0..4).map(|j| source_layer(j, 4, 8)).collect();
        assert_eq!(picks, [0, 2, 5, 7]);
        assert_eq!(source_layer(0, 1, 6), 0);
        assert_eq!(
            (0..6).map(|j| source_layer(j, 6, 6)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn every_parameter_is_taken_from_its_layer_or_by_name() {
        let llm: Vec<NamedTensor> = (0..4)
            .map(|i| t(&format!("model.layers.{i}.mlp.weight"), &[2, 2], i as f32))
            .chain([t("model.embed.weight", &[3, 2], 9.0)])
            .collect();
        let dpm = vec![
            t("model.embed.weight", &[3, 2], 0.0),
            t("model.layers.0.mlp.weight", &[2, 2], 0.0),
            t("model.layers.1.mlp.weight", &[2, 2], 0.0),
        ];
        let cut = cut_params(&llm, &dpm).unwrap();
        let firsts: Vec<f32> = cut.iter().map(|p| p.data[0]).collect();
        assert_eq!(firsts, [9.0, 0.0, 3.0]);
        assert_eq!(cut[2].name.as_str(), "model.layers.1.mlp.weight");
    }

    #[test]
    fn mismatches_are_refused_naming_the_tensor() {
        let llm = vec![t("h.0.w", &[2, 2], 1.0), t("wte", &[4, 2], 1.0)];
        let wide = vec![t("h.0.w", &[3, 3], 0.0)];
        let e = cut_params(&llm, &wide).unwrap_err().to_string();
        assert!(e.contains("h.0.w") && e.contains("[3, 3]"), "{e}");
        let deeper = vec![t("h.0.w", &[2, 2], 0.0), t("h.1.w", &[2, 2], 0.0)];
        let e = cut_params(&llm, &deeper).unwrap_err().to_string();
        assert!(e.contains("2 layers") && e.contains("LLM's 1"), "{e}");
        let stranger = vec![t("lm_head.weight", &[4, 2], 0.0)];
        let e = cut_params(&llm, &stranger).unwrap_err().to_string();
        assert!(e.contains("lm_head.weight"), "{e}");
    }
}
