//! Checks 10-11 and 13-14: parameter and checkpoint round trips, and the adapter split.

use cotune_host::{ParamSelection, TrainOptions};

use crate::support::*;
use crate::Subject;

/// 10. Export then import is exact; a wrong name or shape is refused and changes nothing.
pub fn param_round_trip(s: &Subject) -> Result<String, String> {
    let source = s.model(10)?;
    let mut target = s.model(11)?;
    let exported = source.export_params(ParamSelection::All).map_err(e)?;
    if exported.is_empty() {
        return Err("export_params(All) returned nothing".into());
    }
    let before = target.export_params(ParamSelection::All).map_err(e)?;
    let mut wrong_name = exported.clone();
    wrong_name[0].name = "conformance.no_such_parameter".into();
    match target.import_params(&wrong_name) {
        Ok(()) => return Err("an unknown parameter name was accepted".into()),
        Err(err) if err.to_string().contains("conformance.no_such_parameter") => {}
        Err(err) => return Err(format!("the unknown-name error does not name it: {err}")),
    }
    let mut wrong_shape = exported.clone();
    let last = wrong_shape.len() - 1;
    let p = &mut wrong_shape[last];
    let n = p.data.len() as u64;
    p.shape = vec![n, 1].into();
    if n == 1 {
        p.shape = vec![1, 1, 1].into();
    }
    let mut wrong_size = exported.clone();
    wrong_size[0].shape = vec![wrong_size[0].data.len() as u64 + 1].into();
    wrong_size[0].data.push(0.0);
    for (what, bad) in [("shape", &wrong_shape), ("size", &wrong_size)] {
        if target.import_params(bad).is_ok() {
            return Err(format!("an import with a wrong {what} was accepted"));
        }
    }
    let unchanged = target.export_params(ParamSelection::All).map_err(e)?;
    if unchanged != before {
        return Err("a refused import changed the model".into());
    }
    target.import_params(&exported).map_err(e)?;
    let after = target.export_params(ParamSelection::All).map_err(e)?;
    if after != exported {
        return Err("parameters after import differ from the exported ones".into());
    }
    let batch = small_batch(&source, 12);
    let ls = source.answer_logits(&batch).map_err(e)?;
    let lt = target.answer_logits(&batch).map_err(e)?;
    if ls.data != lt.data {
        return Err(format!(
            "after import, logits differ by {:.3e}",
            max_abs_diff(&ls.data, &lt.data)
        ));
    }
    // Imported parameters must still train: every tensor moves in the next step.
    target.train_step(&batch, None, &options(1e-2)).map_err(e)?;
    let trained = target.export_params(ParamSelection::All).map_err(e)?;
    let frozen: Vec<&str> = trained
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.data == b.data)
        .map(|(a, _)| a.name.as_str())
        .take(5)
        .collect();
    if !frozen.is_empty() {
        return Err(format!(
            "after import, a training step left these tensors unchanged (frozen by the import?): {}",
            frozen.join(", ")
        ));
    }
    let shared = source.export_params(ParamSelection::Shared).map_err(e)?;
    let specific = source
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    if shared.len() + specific.len() != exported.len() {
        return Err(format!(
            "shared ({}) + domain-specific ({}) != all ({}) tensors",
            shared.len(),
            specific.len(),
            exported.len()
        ));
    }
    let values: usize = exported.iter().map(|p| p.data.len()).sum();
    Ok(format!(
        "{} tensors ({values} values) exact and still trainable; wrong name/shape/size refused",
        exported.len()
    ))
}

/// 11. Save then load gives identical logits and an identical next training step.
pub fn checkpoint(s: &Subject) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("model.ckpt");
    let mut a = s.model(12)?;
    let batch = small_batch(&a, 13);
    let opts = options(5e-3);
    train(&mut a, &batch, None, 3, opts)?;
    a.save(&path).map_err(e)?;
    let mut b = s.model(99)?;
    b.load(&path).map_err(e)?;
    let la = a.answer_logits(&batch).map_err(e)?;
    let lb = b.answer_logits(&batch).map_err(e)?;
    if la.data != lb.data {
        return Err(format!(
            "loaded model's logits differ by {:.3e}",
            max_abs_diff(&la.data, &lb.data)
        ));
    }
    let next = TrainOptions { step: 3, ..opts };
    let ra = a.train_step(&batch, None, &next).map_err(e)?;
    let rb = b.train_step(&batch, None, &next).map_err(e)?;
    let la = a.answer_logits(&batch).map_err(e)?;
    let lb = b.answer_logits(&batch).map_err(e)?;
    if ra != rb || la.data != lb.data {
        return Err(format!(
            "the step after loading differs (loss {} vs {}, logits by {:.3e}): optimiser state was not restored",
            ra.loss,
            rb.loss,
            max_abs_diff(&la.data, &lb.data)
        ));
    }
    let missing = dir.path().join("missing.ckpt");
    match b.load(&missing) {
        Ok(()) => return Err("loading a missing file succeeded".into()),
        Err(err) if err.to_string().contains("missing.ckpt") => {}
        Err(err) => {
            return Err(format!(
                "the missing-file error does not name the file: {err}"
            ))
        }
    }
    let garbage = dir.path().join("garbage.ckpt");
    std::fs::write(&garbage, b"not a checkpoint").map_err(|err| err.to_string())?;
    if b.load(&garbage).is_ok() {
        return Err("loading a garbage file succeeded".into());
    }
    let lb2 = b.answer_logits(&batch).map_err(e)?;
    if lb2.data != lb.data {
        return Err("a failed load changed the model".into());
    }
    Ok("identical logits and next step after load; bad files refused".into())
}

/// 13. With adapters on (`[lora] rank = 2`), training changes only adapter tensors: shared
///     tensors stay bit-identical, adapter tensors move.
pub fn lora_split(s: &Subject) -> Result<String, String> {
    let mut model = s.lora_model(14)?;
    let spec = model.spec().clone();
    if spec.num_trainable_params >= spec.num_params {
        return Err(format!(
            "with adapters, {} of {} parameters are trainable",
            spec.num_trainable_params, spec.num_params
        ));
    }
    let shared = model.export_params(ParamSelection::Shared).map_err(e)?;
    let adapters = model
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    if adapters.is_empty() {
        return Err("export_params(DomainSpecific) is empty with adapters on".into());
    }
    let adapter_values: usize = adapters.iter().map(|p| p.data.len()).sum();
    if adapter_values as u64 != spec.num_trainable_params {
        return Err(format!(
            "adapter tensors hold {adapter_values} values, spec says {} trainable",
            spec.num_trainable_params
        ));
    }
    let batch = small_batch(&model, 15);
    let before = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    train(&mut model, &batch, None, 10, options(1e-2))?;
    let after = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    let shared_after = model.export_params(ParamSelection::Shared).map_err(e)?;
    if shared_after != shared {
        let moved: Vec<&str> = shared
            .iter()
            .zip(&shared_after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.name.as_str())
            .take(3)
            .collect();
        return Err(format!(
            "training with adapters changed shared tensors: {}",
            moved.join(", ")
        ));
    }
    let adapters_after = model
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    let moved = adapters
        .iter()
        .zip(&adapters_after)
        .filter(|(a, b)| a.data != b.data)
        .count();
    if moved == 0 {
        return Err("training with adapters changed no adapter tensor".into());
    }
    if after.is_nan() || after >= before {
        return Err(format!(
            "adapter training did not lower the loss: {before:.3} -> {after:.3}"
        ));
    }
    Ok(format!(
        "{} adapter tensors ({adapter_values} values); shared bit-identical, {moved} adapters moved; CE {before:.3} -> {after:.3}",
        adapters.len()
    ))
}

/// 14. Adapter export then import round trips exactly, and importing the shared part too gives
///     the same logits.
pub fn lora_round_trip(s: &Subject) -> Result<String, String> {
    let mut source = s.lora_model(16)?;
    let batch = small_batch(&source, 17);
    train(&mut source, &batch, None, 3, options(1e-2))?;
    let adapters = source
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    let shared = source.export_params(ParamSelection::Shared).map_err(e)?;
    let mut target = s.lora_model(18)?;
    target.import_params(&adapters).map_err(e)?;
    if target
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?
        != adapters
    {
        return Err("adapters after import differ from the exported ones".into());
    }
    target.import_params(&shared).map_err(e)?;
    let ls = source.answer_logits(&batch).map_err(e)?;
    let lt = target.answer_logits(&batch).map_err(e)?;
    if ls.data != lt.data {
        return Err(format!(
            "after importing shared and adapter tensors, logits differ by {:.3e}",
            max_abs_diff(&ls.data, &lt.data)
        ));
    }
    Ok(format!(
        "{} adapter + {} shared tensors round trip exactly",
        adapters.len(),
        shared.len()
    ))
}
