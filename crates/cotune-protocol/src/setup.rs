//! The server's setup: its LLM (pre-trained into the cache, or built bare when resuming), its
//! share of the data in its models' tokens, and the method's server setup, which says what
//! every device receives before round 1. The devices set themselves up in their fleet
//! ([`crate::fleet`]); the server never holds a device's data or model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cotune_data::QaRecord;
use cotune_distill::{pretrain_cached, ModelRecipe, Pretrained};
use cotune_host::Model;

use crate::config::{architecture_of, ExperimentConfig, Plugins};
use crate::fleet::Fleet;
use crate::methods::{Method, ServerSetup};
use crate::parties::ServerData;
use crate::recipes::{check_fits, pretrain_seed, recipe};
use crate::roles::Server;
use crate::tokens::data_key;
use crate::tokens::{Codec, Codecs};

/// A run's state between rounds: the config, the run folder, the server, the devices' fleet
/// and what the first download carried.
pub(crate) struct Experiment {
    /// The checked config.
    pub config: Arc<ExperimentConfig>,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Every model's tokenizer.
    pub codecs: Codecs,
    /// The server.
    pub server: Server,
    /// The devices.
    pub fleet: Box<dyn Fleet>,
    /// Bytes each device receives before round 1 (the method's setup messages).
    pub initial_down: Vec<u64>,
    /// The records the LLM is scored on, the server's own.
    pub llm_eval: Vec<QaRecord>,
    /// The devices' names, in order.
    pub device_names: Vec<String>,
    /// The devices' SLMs as `plugin/architecture`, in order.
    pub slm_labels: Vec<String>,
}

/// The server's side of a run once set up, with what the method's setup sends every device.
pub(crate) struct ServerSide {
    pub server: Server,
    pub codecs: Codecs,
    pub llm_eval: Vec<QaRecord>,
    pub device_names: Vec<String>,
    /// Per device, the messages of the method's setup.
    pub messages: Vec<Vec<Vec<u8>>>,
}

/// Builds the server of `config` from its share of the data. With `fresh` false (resuming)
/// nothing is pre-trained or distilled: the models are restored from the run's checkpoints
/// next.
pub(crate) fn build_server(
    config: &ExperimentConfig,
    plugins: &Plugins,
    data: ServerData,
    cache_dir: &Path,
    fresh: bool,
) -> anyhow::Result<ServerSide> {
    let t = Instant::now();
    let codecs = data.codecs;
    let template = &config.data.prompt_template;
    let llm_codec = codecs.llm.clone();
    let llm_train = llm_codec.encode(&data.public_train, template);
    let llm = build_llm(
        config,
        plugins,
        &data.public_valid,
        &llm_train,
        &llm_codec,
        cache_dir,
        fresh,
    )?;
    check_fits(&llm, "llm", &llm_codec.tokenizer, config)?;
    let mut server = Server {
        llm,
        llm_step: 0,
        public_records: data.public_train,
        public_valid_records: data.public_valid,
        public_prompts: data.public_prompts,
        public_train: llm_train,
        llm_codec,
        state: None,
    };
    let key = data_key(config, &codecs.shared)?;
    let devices = config.devices.len();
    let messages = Method::of(config)?
        .implementation()
        .server_setup(&mut ServerSetup {
            config,
            plugins,
            codecs: &codecs,
            server: &mut server,
            devices,
            cache_dir,
            data_key: &key,
            fresh,
        })?;
    if messages.len() != devices {
        anyhow::bail!(
            "the method's server setup made messages for {} devices, the config has {devices}",
            messages.len()
        );
    }
    progress!("server set up in {:.1}s", t.elapsed().as_secs_f64());
    Ok(ServerSide {
        server,
        codecs,
        llm_eval: data.llm_eval,
        device_names: data.device_names,
        messages,
    })
}

/// The server LLM: pre-trained on the public corpus (or read from the cache), or built bare
/// when resuming.
fn build_llm(
    config: &ExperimentConfig,
    plugins: &Plugins,
    public_valid: &[QaRecord],
    train: &[cotune_host::Example],
    codec: &Codec,
    cache_dir: &Path,
    fresh: bool,
) -> anyhow::Result<Model> {
    let arch = architecture_of(&config.llm, &plugins.llm);
    let text = config.llm.config_text();
    let r = ModelRecipe {
        checkpoint: config.llm.checkpoint.as_deref(),
        ..recipe(&plugins.llm, &arch, &text, pretrain_seed(config))
    };
    if !fresh {
        return Ok(r.build()?);
    }
    if !config.pretrain.llm {
        let model = r.build()?;
        progress!(
            "LLM {} from {}, not pre-trained here (pretrain.llm = false)",
            model.label(),
            config
                .llm
                .checkpoint
                .as_ref()
                .map_or("random weights".into(), |c| c.display().to_string())
        );
        return Ok(model);
    }
    let valid = codec.encode(public_valid, &config.data.prompt_template);
    let key = data_key(config, codec)?;
    let Pretrained { model, report } =
        pretrain_cached(r, &key, train, &valid, &config.pretrain, cache_dir)?;
    let valid: Vec<String> = report
        .valid_cross_entropy
        .iter()
        .map(|v| format!("{v:.3}"))
        .collect();
    progress!(
        "LLM {} {}: best epoch {}, valid CE by epoch {}",
        model.label(),
        if report.from_cache {
            "pre-trained by an earlier run, read from the cache"
        } else {
            "pre-trained now and cached"
        },
        report.best_epoch,
        valid.join(", ")
    );
    Ok(model)
}
