//! What the methods with a distilled proxy model share: the first DPM, distilled from the LLM
//! (cached), the server's DPM slots, a proxy on every device with the first download counted,
//! and the FedAvg step of the server.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cotune_data::{QaRecord, SeededRng};
use cotune_distill::{distill, stable_hash, DistillConfig};
use cotune_host::{Example, Model, ParamSelection};

use super::{Round, Setup, Upload};
use crate::config::{architecture_of, Aggregation, DpmInit, TransferSelect};
use crate::recipes::{check_fits, recipe};
use crate::roles::{Device, DistilledProxy, Server};

/// Distils the first DPM from the server's LLM (or reads it from the cache), fills the
/// server's DPM slots (one, or one per device under `aggregation`) with it, and gives every
/// device a proxy holding it: the first download.
pub(crate) fn attach(setup: &mut Setup<'_>, aggregation: Aggregation) -> anyhow::Result<()> {
    let (config, plugins) = (setup.config, setup.plugins);
    let n = setup.devices.len();
    let entry = config.dpm_of(0);
    let arch = architecture_of(&entry.model(), &plugins.dpms[0]);
    let text = entry.model().config_text();
    let dpm_seed = config.seed.wrapping_add(1);
    let mut first = recipe(&plugins.dpms[0], &arch, &text, dpm_seed).build()?;
    check_fits(&first, "dpm", setup.tokenizer, config)?;
    let init = match entry.init {
        DpmInit::Distilled => String::new(),
        DpmInit::LlmLayers => {
            if setup.fresh {
                crate::emulator::cut_from(&setup.server.llm, &mut first)?;
            }
            "cut from the LLM's layers".to_string()
        }
    };
    if setup.fresh {
        distill_cached(
            &setup.server.llm,
            &mut first,
            &setup.server.public_train,
            &config.distill,
            &[
                &config.llm.config_text(),
                &text,
                setup.data_key,
                &serde_json::to_string(&config.pretrain)?,
                plugins.llm.version(),
                plugins.dpms[0].version(),
                &init,
            ],
            setup.cache_dir,
            dpm_seed,
        )?;
    }
    let first_params = first.export_params(ParamSelection::All)?;
    let message = crate::message::encode_params(&first_params);
    let slots = match aggregation {
        Aggregation::Fedavg => 1,
        Aggregation::PerDevice => n,
    };
    for slot in 0..slots {
        let i = slot.min(n - 1);
        let e = config.dpm_of(i).model();
        let p = &plugins.dpms[i];
        let mut m = recipe(p, &architecture_of(&e, p), &e.config_text(), dpm_seed).build()?;
        m.import_params(&first_params)
            .context("a device DPM must match the distilled one")?;
        setup.server.dpms.push(m);
        setup.server.dpm_steps.push(0);
    }
    for (i, device) in setup.devices.iter_mut().enumerate() {
        let e = config.dpm_of(i);
        let p = &plugins.dpms[i];
        let a = architecture_of(&e.model(), p);
        let mut proxy = DistilledProxy {
            shared: recipe(p, &a, &e.model().config_text(), dpm_seed).build()?,
            adapted: recipe(p, &a, &e.adapted_config_text(), dpm_seed + 1 + i as u64).build()?,
            shared_step: 0,
            adapted_step: 0,
        };
        proxy.download(&message)?;
        setup.initial_down[i] += message.len() as u64;
        device.dpm = Some(proxy);
    }
    Ok(())
}

/// Gives every device `size` questions of the public corpus for the `public` transfer set,
/// counted in its first download: under `select = "random"` a seeded choice per device; under
/// `"similar"` the device receives them all and keeps the `size` closest to its own
/// (`crate::similarity`).
pub(crate) fn send_public_transfer(
    setup: &mut Setup<'_>,
    size: usize,
    select: TransferSelect,
) -> anyhow::Result<()> {
    let public = setup.public_records;
    let (tokenizer, template) = (setup.tokenizer, &setup.config.data.prompt_template);
    // The server's public corpus is already encoded (`public_train` holds `public` encoded).
    let everything = match select {
        TransferSelect::Random => None,
        TransferSelect::Similar => Some((
            serde_json::to_vec(public)?.len() as u64,
            &setup.server.public_train,
        )),
    };
    for (i, device) in setup.devices.iter_mut().enumerate() {
        device.public_transfer = match &everything {
            None => {
                let mut idx: Vec<usize> = (0..public.len()).collect();
                SeededRng::for_stream(setup.config.seed.wrapping_add(i as u64), "public-transfer")
                    .shuffle(&mut idx);
                idx.truncate(size);
                let records: Vec<QaRecord> = idx.iter().map(|&k| public[k].clone()).collect();
                setup.initial_down[i] += serde_json::to_vec(&records)?.len() as u64;
                crate::recipes::encode_all(&records, tokenizer, template)
            }
            Some((bytes, examples)) => {
                setup.initial_down[i] += bytes;
                crate::similarity::most_similar(&device.train, examples, size)
                    .into_iter()
                    .map(|k| examples[k].clone())
                    .collect()
            }
        };
    }
    Ok(())
}

/// The device's upload: its proxy's shared part.
pub(crate) fn upload(device: &mut Device) -> anyhow::Result<Vec<u8>> {
    device.proxy()?.upload()
}

/// Replaces the device proxy's shared part with the download.
pub(crate) fn receive(device: &mut Device, download: &[u8]) -> anyhow::Result<()> {
    device.proxy()?.download(download)
}

/// FedAvg of the uploads (weighted by local examples) into the server's one DPM slot.
pub(crate) fn aggregate(server: &mut Server, uploads: &[Upload]) -> anyhow::Result<()> {
    let weighted: Vec<(&[u8], f64)> = uploads
        .iter()
        .map(|u| (u.bytes.as_slice(), u.examples as f64))
        .collect();
    server.aggregate(&weighted, 0)
}

/// The server's DPM slot 0 sent to every device of the experiment.
pub(crate) fn to_every_device(
    round: &Round<'_>,
    server: &Server,
) -> anyhow::Result<Vec<(usize, Vec<u8>)>> {
    let message = server.dpm_message(0)?;
    Ok((0..round.devices).map(|i| (i, message.clone())).collect())
}

/// Distils `student` from `teacher`, or loads the cached result keyed by `key_parts`.
#[allow(clippy::too_many_arguments)]
fn distill_cached(
    teacher: &Model,
    student: &mut Model,
    examples: &[Example],
    config: &DistillConfig,
    key_parts: &[&str],
    cache_dir: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    let settings = serde_json::to_string(config)?;
    let seed_text = seed.to_string();
    let mut parts = vec!["distill-v1", settings.as_str(), seed_text.as_str()];
    parts.extend_from_slice(key_parts);
    let key = stable_hash(&parts);
    let dir = cache_dir.join(format!("distill-{key}"));
    let path = dir.join("dpm.ckpt");
    if path.is_file() {
        student
            .load(&path)
            .with_context(|| format!("loading cached DPM {}", path.display()))?;
        progress!("DPM distilled (from cache {})", dir.display());
        return Ok(());
    }
    let t = Instant::now();
    distill(teacher, student, examples, config, seed)?;
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join("dpm.ckpt.partial");
    student.save(&partial)?;
    std::fs::rename(&partial, &path)?;
    progress!("DPM distilled in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
