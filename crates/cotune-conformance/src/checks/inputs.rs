//! Check 12: bad inputs are refused with clear errors and leave the model unchanged.

use cotune_host::{ErrorKind, Example, GenerateOptions, HostError};

use crate::support::*;
use crate::Subject;

/// 12. A token id ≥ vocab size, an empty batch, a NaN soft target: each a clear error from the
///     host and from the plugin itself (not a caught panic), and the model still works.
pub fn bad_input(s: &Subject) -> Result<String, String> {
    let mut model = s.model(13)?;
    let v = vocab(&model);
    let batch = small_batch(&model, 14);
    let mut out_of_range = batch.clone();
    out_of_range[1].answer[0] = v;
    let good_logits = model.answer_logits(&batch).map_err(e)?;
    let mut nan_soft = good_logits.clone();
    nan_soft.data[3] = f32::NAN;
    let opts = options(1e-3);

    let host_refuses = |r: Result<(), HostError>, what: &str, needle: &str| match r {
        Ok(()) => Err(format!("the host accepted {what}")),
        Err(err) if err.to_string().contains(needle) => Ok(()),
        Err(err) => Err(format!(
            "the host's error for {what} does not say `{needle}`: {err}"
        )),
    };
    host_refuses(
        model.answer_logits(&out_of_range).map(|_| ()),
        "a token id >= vocab",
        &v.to_string(),
    )?;
    host_refuses(
        model.answer_logits(&[]).map(|_| ()),
        "an empty batch",
        "empty",
    )?;
    host_refuses(
        model
            .train_step(&batch, Some(nan_soft.clone()), &opts)
            .map(|_| ()),
        "a NaN soft target",
        "NaN",
    )?;

    let plugin_refuses = |r: Result<(), cotune_host::PluginError>, what: &str| match r {
        Ok(()) => Err(format!("the plugin itself accepted {what}")),
        Err(err) if err.kind == ErrorKind::Panic => Err(format!(
            "the plugin panicked on {what} (caught, but not a clear error): {}",
            err.message
        )),
        Err(_) => Ok(()),
    };
    let mut raw = model.unvalidated();
    plugin_refuses(
        raw.answer_logits(&out_of_range).map(|_| ()),
        "a token id >= vocab",
    )?;
    plugin_refuses(raw.answer_logits(&[]).map(|_| ()), "an empty batch")?;
    plugin_refuses(
        raw.train_step(&batch, Some(nan_soft), &opts).map(|_| ()),
        "a NaN soft target",
    )?;
    plugin_refuses(
        raw.generate(
            &[vec![v + 5]],
            &GenerateOptions {
                max_new_tokens: 2,
                eos_id: 0,
            },
        )
        .map(|_| ()),
        "a prompt token id >= vocab",
    )?;
    plugin_refuses(
        raw.train_step(&[Example::new(vec![1], vec![])], None, &opts)
            .map(|_| ()),
        "an empty answer",
    )?;
    let after = model.answer_logits(&batch).map_err(e)?;
    if after.data != good_logits.data {
        return Err("refused inputs changed the model".into());
    }
    Ok("host and plugin refuse each with a clear error; model unchanged".into())
}
