//! What the methods with a distilled proxy model share: the first DPM, distilled from the LLM
//! (cached), the server's DPM slots, a proxy on every device with the first download counted,
//! and the FedAvg step of the server.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cotune_data::{QaRecord, SeededRng};
use cotune_distill::{distill, stable_hash, DistillConfig, Teacher};
use cotune_host::{Example, Model, NamedTensor, ParamSelection};

use super::{DeviceSetup, Round, ServerSetup, Upload};
use crate::config::{architecture_of, Aggregation, DpmInit, TransferSelect};
use crate::message::{decode_params, weighted_average};
use crate::recipes::{check_fits, recipe};
use crate::records::{RefusedUpload, UploadChecks};
use crate::roles::{Device, DistilledProxy, Server, ServerProxies};
use crate::seed::Stream;
use crate::tokens::{bridge, Codec};
use crate::uploads;

/// Distils the first DPM from the server's LLM (or reads it from the cache) and fills the
/// server's DPM slots (one, or one per device under `aggregation`) with it. Returns the first
/// download every device receives: the DPM's parameters ([`attach_proxy`] on the device).
pub(crate) fn attach(
    setup: &mut ServerSetup<'_>,
    aggregation: Aggregation,
) -> anyhow::Result<Vec<u8>> {
    let (config, plugins) = (setup.config, setup.plugins);
    let n = setup.devices;
    let entry = config.dpm_of(0);
    let arch = architecture_of(&entry.model(), &plugins.dpms[0]);
    let text = entry.model().config_text();
    let dpm_seed = config.seed.wrapping_add(1);
    let mut first = recipe(&plugins.dpms[0], &arch, &text, dpm_seed).build()?;
    let codec = setup.codecs.dpms[0].clone();
    check_fits(&first, "dpm", &codec.tokenizer, config)?;
    let mut proxies = server_proxies(setup, &codec)?;
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
        let server = &*setup.server;
        // Another tokenizer on either side changes what is distilled (the key of a run with
        // the shared tokenizer everywhere is as it always was).
        let tokens = match (&proxies.to_dpm, setup.codecs.llm.same(&setup.codecs.shared)) {
            (None, true) if codec.same(&setup.codecs.shared) => String::new(),
            (bridge, _) => format!(
                "llm {} dpm {} alignment {} top-k {}",
                setup.codecs.llm.tokenizer.fingerprint(),
                codec.tokenizer.fingerprint(),
                bridge.as_ref().map_or("none", |b| b.alignment().name()),
                config.train.top_k
            ),
        };
        let mut parts = vec![
            config.llm.config_text(),
            text.clone(),
            setup.data_key.to_string(),
            serde_json::to_string(&config.pretrain)?,
            plugins.llm.version().to_string(),
            plugins.dpms[0].version().to_string(),
            init.clone(),
        ];
        if !tokens.is_empty() {
            parts.push(tokens);
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        distill_cached(
            Teacher {
                model: &server.llm,
                examples: &server.public_train,
                bridge: proxies.to_dpm.as_ref(),
            },
            &mut first,
            &proxies.public_dpm,
            &config.distill,
            &parts,
            setup.cache_dir,
            dpm_seed,
        )?;
    }
    let first_params = first.export_params(ParamSelection::All)?;
    let message = crate::message::encode_params(&first_params);
    let slots = match aggregation.one_slot() {
        true => 1,
        false => n,
    };
    for slot in 0..slots {
        let i = slot.min(n - 1);
        let e = config.dpm_of(i).model();
        let p = &plugins.dpms[i];
        let mut m = recipe(p, &architecture_of(&e, p), &e.config_text(), dpm_seed).build()?;
        m.import_params(&first_params)
            .context("a device DPM must match the distilled one")?;
        proxies.dpms.push(m);
        proxies.dpm_steps.push(0);
    }
    setup.server.state = Some(Box::new(proxies));
    Ok(message)
}

/// The server's DPM state before its slots are filled: the public corpus in the DPMs' tokens
/// (`codec`) and the bridges between the DPMs' vocabulary and the LLM's.
fn server_proxies(setup: &ServerSetup<'_>, codec: &Codec) -> anyhow::Result<ServerProxies> {
    let server = &*setup.server;
    let (llm_codec, train) = (&server.llm_codec, &setup.config.train);
    let template = &setup.config.data.prompt_template;
    let public_dpm = match codec.same(llm_codec) {
        true => server.public_train.clone(),
        false => codec.encode(&server.public_records, template),
    };
    Ok(ServerProxies {
        dpms: Vec::new(),
        dpm_steps: Vec::new(),
        public_dpm,
        public_valid: codec.encode(&server.public_valid_records, template),
        to_llm: bridge(
            train.alignment,
            train.top_k,
            ("dpm", codec),
            ("llm", llm_codec),
        )?,
        to_dpm: bridge(
            train.alignment,
            train.top_k,
            ("llm", llm_codec),
            ("dpm", codec),
        )?,
        codec: codec.clone(),
    })
}

/// The device's side of [`attach`]: a proxy holding the first DPM, the first of the messages
/// it received (`method` names the method in errors).
pub(crate) fn attach_proxy(
    setup: &DeviceSetup<'_>,
    device: &mut Device,
    received: &[Vec<u8>],
    method: &str,
) -> anyhow::Result<()> {
    let Some(first) = received.first() else {
        anyhow::bail!("{method} sends every device its first DPM; none was received");
    };
    let proxy = make_proxy(setup.config, setup.plugins, setup.codecs, device, first)?;
    device.state = Some(Box::new(proxy));
    Ok(())
}

/// Device `device.index`'s proxy holding the first DPM (`message`, every parameter): the same
/// on the server's side of a run and on a device of a deployment.
pub(crate) fn make_proxy(
    config: &crate::config::ExperimentConfig,
    plugins: &crate::config::Plugins,
    codecs: &crate::tokens::Codecs,
    device: &Device,
    message: &[u8],
) -> anyhow::Result<DistilledProxy> {
    let i = device.index;
    let dpm_seed = config.seed.wrapping_add(1);
    let (alignment, top_k) = (config.train.alignment, config.train.top_k);
    let template = &config.data.prompt_template;
    let e = config.dpm_of(i);
    let p = &plugins.dpms[i];
    let a = architecture_of(&e.model(), p);
    let codec = codecs.dpms[i].clone();
    let (slm_name, dpm_name) = (
        format!("devices[{i}].slm"),
        format!("the dpm of device {i}"),
    );
    let slm = (slm_name.as_str(), &device.slm_codec);
    let dpm = (dpm_name.as_str(), &codec);
    let mut proxy = DistilledProxy {
        shared: recipe(p, &a, &e.model().config_text(), dpm_seed).build()?,
        adapted: recipe(p, &a, &e.adapted_config_text(), dpm_seed + 1 + i as u64).build()?,
        shared_step: 0,
        adapted_step: 0,
        train: codec.encode(&device.train_records, template),
        public_transfer: Vec::new(),
        slm_public_transfer: Vec::new(),
        from_slm: bridge(alignment, top_k, slm, dpm)?,
        to_slm: bridge(alignment, top_k, dpm, slm)?,
        codec,
    };
    proxy.download(message)?;
    Ok(proxy)
}

/// What each device receives for the `public` transfer set, one message per device: under
/// `select = "random"` a seeded choice of `size` public questions per device; under
/// `"similar"` every public question, of which the device keeps the `size` closest to its own
/// ([`receive_public_transfer`]), so its questions never leave it.
pub(crate) fn public_transfer_messages(
    setup: &ServerSetup<'_>,
    size: usize,
    select: TransferSelect,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let public = &setup.server.public_records;
    match select {
        TransferSelect::Similar => {
            let everything = serde_json::to_vec(public)?;
            Ok(vec![everything; setup.devices])
        }
        TransferSelect::Random => (0..setup.devices)
            .map(|i| {
                let mut idx: Vec<usize> = (0..public.len()).collect();
                SeededRng::for_stream(setup.config.seed.wrapping_add(i as u64), "public-transfer")
                    .shuffle(&mut idx);
                idx.truncate(size);
                let records: Vec<QaRecord> = idx.iter().map(|&k| public[k].clone()).collect();
                Ok(serde_json::to_vec(&records)?)
            })
            .collect(),
    }
}

/// The device's side of [`public_transfer_messages`]: the public questions it received (under
/// `"similar"`, the `size` closest to its own, compared in its SLM's tokens) become its
/// transfer set, in its SLM's and its proxy's tokens.
pub(crate) fn receive_public_transfer(
    setup: &DeviceSetup<'_>,
    device: &mut Device,
    message: &[u8],
) -> anyhow::Result<()> {
    let template = &setup.config.data.prompt_template;
    let received: Vec<QaRecord> =
        serde_json::from_slice(message).context("the public questions of the transfer set")?;
    let train = &setup.config.train;
    let records = match train.transfer_select {
        TransferSelect::Random => received,
        TransferSelect::Similar => {
            let examples = device.slm_codec.encode(&received, template);
            crate::similarity::most_similar(&device.train, &examples, train.transfer_size)
                .into_iter()
                .map(|k| received[k].clone())
                .collect()
        }
    };
    let slm_side = device.slm_codec.encode(&records, template);
    let proxy = device.proxy()?;
    proxy.public_transfer = proxy.codec.encode(&records, template);
    proxy.slm_public_transfer = slm_side;
    Ok(())
}

/// The DPM each device in `devices` starts its step from: the server's slot for it (one slot,
/// or its own under per-device aggregation), each slot exported once.
pub(crate) fn references(
    aggregation: Aggregation,
    server: &Server,
    devices: &[usize],
) -> anyhow::Result<Vec<(usize, Vec<NamedTensor>)>> {
    let proxies = server
        .state::<ServerProxies>()
        .ok_or_else(|| anyhow::anyhow!("the server holds no DPMs"))?;
    let mut exported: std::collections::BTreeMap<usize, Vec<NamedTensor>> = Default::default();
    let mut out = Vec::with_capacity(devices.len());
    for &device in devices {
        let slot = match aggregation.one_slot() {
            true => 0,
            false => device,
        };
        let reference = match exported.get(&slot) {
            Some(r) => r.clone(),
            None => {
                let r = proxies.dpms[slot].export_params(ParamSelection::All)?;
                exported.insert(slot, r.clone());
                r
            }
        };
        out.push((device, reference));
    }
    Ok(out)
}

/// The device's upload: its proxy's shared part.
pub(crate) fn upload(device: &mut Device) -> anyhow::Result<Vec<u8>> {
    device.proxy()?.upload()
}

/// Replaces the device proxy's shared part with the download.
pub(crate) fn receive(device: &mut Device, download: &[u8]) -> anyhow::Result<()> {
    device.proxy()?.download(download)
}

/// The server's checks of the uploads, in their order: each decodes, is shaped like the DPM in
/// its slot (`slot_of(device)`) and holds only finite values; with `train.screen_ratio`, its
/// DPM's cross-entropy on the server's public validation split is at most that ratio times the
/// lower median of the round's uploads. Returns the accepted `(index in uploads, parameters)`; the
/// refused are named in `checks`, never dropped silently.
pub(crate) fn check_uploads(
    round: &Round<'_>,
    server: &mut Server,
    uploads: &[Upload],
    slot_of: impl Fn(usize) -> usize,
    checks: &mut UploadChecks,
) -> anyhow::Result<Vec<(usize, Vec<NamedTensor>)>> {
    let s = round.settings;
    let refuse = |checks: &mut UploadChecks, device: usize, reason: String| {
        progress!("  refused the upload of device {device}: {reason}");
        checks.refused.push(RefusedUpload { device, reason });
    };
    let mut accepted = Vec::new();
    // The DPM each upload is checked against, exported once per slot.
    let proxies = server.proxies()?;
    let mut references: Vec<Option<Vec<NamedTensor>>> = vec![None; proxies.dpms.len()];
    for (k, u) in uploads.iter().enumerate() {
        let slot = slot_of(u.device);
        let reference = match &mut references[slot] {
            Some(r) => &*r,
            none => none.insert(proxies.dpms[slot].export_params(ParamSelection::All)?),
        };
        let params = match decode_params(&u.bytes) {
            Ok(p) => p,
            Err(e) => {
                refuse(checks, u.device, e.to_string());
                continue;
            }
        };
        if let Err(e) = uploads::check_like(&params, reference) {
            refuse(checks, u.device, e);
            continue;
        }
        if let Some((name, i, v)) = uploads::first_non_finite(&params) {
            refuse(
                checks,
                u.device,
                format!("non-finite value {v} at {name}[{i}]"),
            );
            continue;
        }
        accepted.push((k, params));
    }
    if s.screen_ratio <= 0.0 || accepted.is_empty() {
        return Ok(accepted);
    }
    let batch = s.dpm.batch_size.max(1);
    let mut losses = Vec::with_capacity(accepted.len());
    for (k, params) in &accepted {
        let dpm = &mut proxies.dpms[slot_of(uploads[*k].device)];
        let before = dpm.export_params(ParamSelection::All)?;
        dpm.import_params(params)?;
        let ce = cotune_distill::mean_cross_entropy(dpm, &proxies.public_valid, batch);
        dpm.import_params(&before)?;
        losses.push(ce?);
    }
    let mut finite: Vec<f64> = losses.iter().copied().filter(|c| c.is_finite()).collect();
    finite.sort_unstable_by(f64::total_cmp);
    // The lower median: with an even count the better of the two middle values, so one bad
    // upload of two or of four cannot raise the bar it is measured against.
    let median = finite
        .get(finite.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let limit = s.screen_ratio * median;
    let mut kept = Vec::with_capacity(accepted.len());
    for ((k, params), ce) in accepted.into_iter().zip(losses) {
        let device = uploads[k].device;
        checks.screen.push((device, ce));
        if ce.is_finite() && ce <= limit {
            kept.push((k, params));
        } else {
            refuse(
                checks,
                device,
                format!(
                    "its DPM's cross-entropy on the public validation split is {ce:.3}, over \
                     train.screen_ratio = {} times the round's median {median:.3}",
                    s.screen_ratio
                ),
            );
        }
    }
    Ok(kept)
}

/// The uploads combined into the server's one DPM slot by `rule`, after
/// [`check_uploads`]: FedAvg weighted by local examples (with central privacy: the updates
/// clipped again, averaged unweighted, and Gaussian noise of standard deviation
/// `noise_multiplier * clip` added to their sum), the coordinate-wise median or trimmed mean,
/// or Krum's choice (the median when too few uploads remain for its bound, recorded).
pub(crate) fn aggregate(
    round: &Round<'_>,
    server: &mut Server,
    uploads: &[Upload],
    rule: Aggregation,
) -> anyhow::Result<UploadChecks> {
    let s = round.settings;
    let mut checks = UploadChecks {
        rule: rule.name().to_string(),
        ..UploadChecks::default()
    };
    let accepted = check_uploads(round, server, uploads, |_| 0, &mut checks)?;
    if accepted.is_empty() {
        progress!("  no upload accepted this round: the server's DPM stays as it was");
        return Ok(checks);
    }
    let (index, sets): (Vec<usize>, Vec<Vec<NamedTensor>>) = accepted.into_iter().unzip();
    let central = round
        .privacy
        .filter(|p| p.mode == crate::config::PrivacyMode::Central);
    let combined = match rule {
        Aggregation::Fedavg => match central {
            Some(p) => {
                let reference = server.proxies()?.dpms[0].export_params(ParamSelection::All)?;
                let mut sets = sets;
                for set in &mut sets {
                    uploads::clip_update(set, &reference, p.clip);
                }
                let mut avg = uploads::mean(&sets).map_err(anyhow::Error::msg)?;
                // Noise of std z * C on the sum is noise of std z * C / m on the mean.
                let std = p.noise_multiplier * p.clip / sets.len() as f64;
                let seed = round.server_seed().of(Stream::CentralNoise, 0);
                uploads::add_noise(&mut avg, std, &mut SeededRng::for_stream(seed, "noise"));
                avg
            }
            None => {
                let weighted: Vec<(Vec<NamedTensor>, f64)> = sets
                    .into_iter()
                    .zip(&index)
                    .map(|(set, &k)| (set, uploads[k].examples as f64))
                    .collect();
                weighted_average(&weighted).map_err(|e| anyhow::anyhow!("FedAvg: {e}"))?
            }
        },
        Aggregation::Median => uploads::median(&sets).map_err(anyhow::Error::msg)?,
        Aggregation::TrimmedMean => {
            uploads::trimmed_mean(&sets, s.trim).map_err(anyhow::Error::msg)?
        }
        Aggregation::Krum => match uploads::krum(&sets, s.byzantine) {
            Ok(i) => {
                checks.krum_choice = Some(uploads[index[i]].device);
                sets.into_iter().nth(i).expect("Krum chose one of the sets")
            }
            Err(why) => {
                progress!("  {why}: the median instead");
                checks.fallback = Some(format!("{why}: the median instead"));
                uploads::median(&sets).map_err(anyhow::Error::msg)?
            }
        },
        Aggregation::PerDevice => {
            anyhow::bail!("per-device aggregation keeps one DPM per device; nothing to combine")
        }
    };
    server.proxies()?.dpms[0].import_params(&combined)?;
    Ok(checks)
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
    teacher: Teacher<'_>,
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
    distill(&teacher, student, examples, config, seed)?;
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join("dpm.ckpt.partial");
    student.save(&partial)?;
    std::fs::rename(&partial, &path)?;
    progress!("DPM distilled in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
