//! What the server accepts from a device over the network: every upload checked against what
//! the open phase expects ([`validate`]) before the transport takes it, prediction files within
//! their caps, and FedAvg's weight of a device bounded by the config.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cotune_protocol::uploads::{check_upload, ExpectedUpload};

use crate::payload::is_plain_file_name;
use crate::{Part, Payload, Phase, ReportMeta};

/// The most prediction files a device's receive upload may hold (a device sends one per model
/// it scores: its SLM's and its DPM's).
pub const MAX_PREDICTION_FILES: usize = 4;

/// The most bytes of prediction files a device's receive upload may hold, all files together.
pub const MAX_PREDICTION_BYTES: usize = 64 << 20;

/// What the validator checks the uploads of the open phase against.
#[derive(Default)]
pub(crate) struct Expected {
    pub(crate) net_round: u64,
    pub(crate) phase: Option<Phase>,
    pub(crate) round: usize,
    /// Step: per participant, what its step's message must be (the method's
    /// `expected_uploads`).
    pub(crate) uploads: BTreeMap<usize, ExpectedUpload>,
    pub(crate) max_norm: Option<f64>,
    /// Receive: whether prediction files may come with the scores (`deploy.send_predictions`).
    pub(crate) send_predictions: bool,
}

/// The expectations, even after a panic elsewhere held the lock.
pub(crate) fn lock(e: &Mutex<Expected>) -> std::sync::MutexGuard<'_, Expected> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// FedAvg's weight of a device that declares `claimed` training examples when the config gives a
/// device at most `bound`: the claim clamped to `1..=bound` (at least 1, so that zero claims
/// cannot leave the average without weight).
pub(crate) fn fedavg_weight(claimed: usize, bound: usize) -> usize {
    claimed.min(bound).max(1)
}

/// The server's check of an upload before it is accepted.
pub(crate) fn validate(e: &Expected, device: u32, net: u64, bytes: &[u8]) -> Result<(), String> {
    let p = Payload::decode(bytes, "the upload")?;
    let meta: ReportMeta =
        serde_json::from_str(&p.meta).map_err(|err| format!("the upload's metadata: {err}"))?;
    let phase = e.phase.map_or("none", Phase::name);
    if net != e.net_round
        || meta.device != device as usize
        || meta.round != e.round
        || Some(meta.phase) != e.phase
    {
        return Err(format!(
            "the upload says device {} round {} {}, the server expects device {device} round {} {phase}",
            meta.device,
            meta.round,
            meta.phase.name(),
            e.round
        ));
    }
    for s in [meta.slm, meta.dpm].into_iter().flatten() {
        if !(s.em.is_finite() && s.rouge_l.is_finite()) {
            return Err(format!("non-finite scores {s:?}"));
        }
    }
    for (part, _) in p.parts() {
        let allowed = match part {
            Part::Upload => meta.phase == Phase::Step,
            Part::Prediction(file) => meta.phase == Phase::Receive && is_plain_file_name(file),
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "a device's {} upload may not hold {part:?}",
                meta.phase.name()
            ));
        }
    }
    match meta.phase {
        Phase::Step => {
            let Some(expected) = e.uploads.get(&(device as usize)) else {
                return Err(format!(
                    "device {device} is not a participant of round {} step",
                    e.round
                ));
            };
            check_upload(expected, p.get(&Part::Upload), e.max_norm)
        }
        Phase::Receive => check_predictions(&p, e.send_predictions),
    }
}

/// A receive upload's prediction files: none unless `deploy.send_predictions`; at most
/// [`MAX_PREDICTION_FILES`] of at most [`MAX_PREDICTION_BYTES`] together; each JSON lines of
/// objects.
fn check_predictions(p: &Payload, send_predictions: bool) -> Result<(), String> {
    let files: Vec<(&str, &[u8])> = p
        .parts()
        .filter_map(|(part, bytes)| match part {
            Part::Prediction(name) => Some((name.as_str(), bytes)),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    if !send_predictions {
        return Err(format!(
            "the upload holds {} prediction files ({}), and deploy.send_predictions = false \
             keeps them on the devices",
            files.len(),
            files.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
        ));
    }
    if files.len() > MAX_PREDICTION_FILES {
        return Err(format!(
            "the upload holds {} prediction files, more than the {MAX_PREDICTION_FILES} a \
             device sends",
            files.len()
        ));
    }
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    if total > MAX_PREDICTION_BYTES {
        return Err(format!(
            "the upload's prediction files hold {total} bytes, more than the \
             {MAX_PREDICTION_BYTES} accepted"
        ));
    }
    for (name, bytes) in files {
        let text = std::str::from_utf8(bytes)
            .map_err(|err| format!("prediction file {name} is not UTF-8 text: {err}"))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => {
                    return Err(format!(
                        "prediction file {name} line {} is not a JSON object",
                        n + 1
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_host::NamedTensor;
    use cotune_protocol::message::encode_params;
    use cotune_protocol::records::DeviceLosses;

    fn report(
        phase: Phase,
        round: usize,
        device: usize,
        params: Option<Vec<NamedTensor>>,
    ) -> Vec<u8> {
        let meta = ReportMeta {
            phase,
            round,
            device,
            losses: DeviceLosses::default(),
            examples: 3,
            prepared: None,
            slm: None,
            dpm: None,
            seconds: 0.0,
        };
        let mut p = Payload::new(serde_json::to_string(&meta).unwrap());
        if let Some(params) = params {
            p.put(Part::Upload, encode_params(&params));
        }
        p.encode()
    }

    /// Round 2's step: device 1 uploads a parameter set, device 0 nothing, device 2 top-k
    /// knowledge on two examples, device 3 records.
    fn expected() -> Expected {
        let reference = vec![NamedTensor::new("w", vec![2], vec![0.0, 0.0])];
        Expected {
            net_round: 4,
            phase: Some(Phase::Step),
            round: 2,
            uploads: [
                (0, ExpectedUpload::Nothing),
                (1, ExpectedUpload::Params(reference)),
                (
                    2,
                    ExpectedUpload::Knowledge {
                        answer_lens: vec![1, 2],
                        max_k: 3,
                    },
                ),
                (3, ExpectedUpload::Records { max_records: 5 }),
            ]
            .into_iter()
            .collect(),
            max_norm: Some(1.0),
            send_predictions: false,
        }
    }

    /// A step upload of `device` holding `message`.
    fn step_with(device: usize, message: Vec<u8>) -> Vec<u8> {
        let mut p = Payload::decode(&report(Phase::Step, 2, device, None), "test").unwrap();
        p.put(Part::Upload, message);
        p.encode()
    }

    #[test]
    fn knowledge_and_records_are_checked_like_parameters() {
        use cotune_protocol::fedmkt::{encode_topk, ExampleTopK};
        let e = expected();
        let entry = |positions: usize| ExampleTopK {
            ids: vec![1; positions * 3],
            logits: vec![0.5; positions * 3],
            rest: vec![-1.0; positions],
        };
        let good = encode_topk(&[entry(1), entry(2)]);
        assert_eq!(validate(&e, 2, 4, &step_with(2, good.clone())), Ok(()));
        // A malformed knowledge upload is refused by what is wrong, never reaching the step.
        let short = encode_topk(&[entry(1)]);
        let err = validate(&e, 2, 4, &step_with(2, short)).unwrap_err();
        assert!(
            err.contains("covers 1 examples, the round's public sample has 2"),
            "{err}"
        );
        let err = validate(&e, 2, 4, &step_with(2, good[..good.len() - 3].to_vec())).unwrap_err();
        assert!(err.starts_with("the knowledge upload:"), "{err}");
        let err = validate(&e, 2, 4, &report(Phase::Step, 2, 2, None)).unwrap_err();
        assert!(err.contains("the method expects top-k knowledge"), "{err}");
        // Parameters where knowledge is expected, and the other way round.
        let params = encode_params(&[NamedTensor::new("w", vec![2], vec![0.5, 0.5])]);
        let err = validate(&e, 2, 4, &step_with(2, params)).unwrap_err();
        assert!(err.starts_with("the knowledge upload:"), "{err}");
        let err = validate(&e, 1, 4, &step_with(1, good)).unwrap_err();
        assert!(err.contains("magic"), "{err}");
        // Records.
        let records = br#"[{"domain":"d","question":"q?","answer":"a"}]"#.to_vec();
        assert_eq!(validate(&e, 3, 4, &step_with(3, records)), Ok(()));
        let err = validate(&e, 3, 4, &step_with(3, b"[1, 2]".to_vec())).unwrap_err();
        assert!(err.contains("not a JSON list of records"), "{err}");
        // A message from a method whose step sends none.
        let err = validate(&e, 0, 4, &step_with(0, b"x".to_vec())).unwrap_err();
        assert!(err.contains("the method's device step sends none"), "{err}");
        // A device the server expects nothing from.
        let err = validate(&e, 7, 4, &report(Phase::Step, 2, 7, None)).unwrap_err();
        assert!(
            err.contains("device 7 is not a participant of round 2 step"),
            "{err}"
        );
    }

    /// A receive upload of device 1 with `files`.
    fn receive_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut p = Payload::decode(&report(Phase::Receive, 2, 1, None), "test").unwrap();
        for (name, bytes) in files {
            p.put(Part::Prediction(name.to_string()), bytes.to_vec());
        }
        p.encode()
    }

    fn receiving(send_predictions: bool) -> Expected {
        Expected {
            net_round: 5,
            phase: Some(Phase::Receive),
            round: 2,
            uploads: BTreeMap::new(),
            max_norm: None,
            send_predictions,
        }
    }

    #[test]
    fn prediction_files_come_only_when_asked_for_within_their_caps() {
        let line: &[u8] = b"{\"prediction\":\"a\",\"reference\":\"a\"}\n";
        let on = receiving(true);
        assert_eq!(
            validate(&on, 1, 5, &receive_with(&[("geo-slm.jsonl", line)])),
            Ok(())
        );
        assert_eq!(validate(&on, 1, 5, &receive_with(&[])), Ok(()));
        // Not asked for: refused, naming the files and the setting.
        let err = validate(
            &receiving(false),
            1,
            5,
            &receive_with(&[("geo-slm.jsonl", line)]),
        )
        .unwrap_err();
        assert!(
            err.contains(
                "holds 1 prediction files (geo-slm.jsonl), and deploy.send_predictions = false"
            ),
            "{err}"
        );
        assert_eq!(
            validate(&receiving(false), 1, 5, &receive_with(&[])),
            Ok(())
        );
        // Too many files, too many bytes, not JSON lines.
        let names: Vec<String> = (0..=MAX_PREDICTION_FILES)
            .map(|k| format!("f{k}.jsonl"))
            .collect();
        let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), line)).collect();
        let err = validate(&on, 1, 5, &receive_with(&many)).unwrap_err();
        assert!(
            err.contains(&format!(
                "holds {} prediction files, more than the {MAX_PREDICTION_FILES}",
                MAX_PREDICTION_FILES + 1
            )),
            "{err}"
        );
        let big = vec![b' '; MAX_PREDICTION_BYTES / 2 + 1];
        let err = validate(
            &on,
            1,
            5,
            &receive_with(&[("a.jsonl", &big), ("b.jsonl", &big)]),
        )
        .unwrap_err();
        assert!(
            err.contains(&format!(
                "hold {} bytes, more than the {MAX_PREDICTION_BYTES} accepted",
                big.len() * 2
            )),
            "{err}"
        );
        let err = validate(&on, 1, 5, &receive_with(&[("a.jsonl", b"{}\n[1]\n")])).unwrap_err();
        assert!(
            err.contains("prediction file a.jsonl line 2 is not a JSON object"),
            "{err}"
        );
        let err = validate(&on, 1, 5, &receive_with(&[("a.jsonl", &[0xff, 0xfe])])).unwrap_err();
        assert!(
            err.contains("prediction file a.jsonl is not UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn fedavg_weighs_a_device_by_its_claim_clamped_to_the_config() {
        assert_eq!(fedavg_weight(37, 40), 37);
        assert_eq!(fedavg_weight(40, 40), 40);
        assert_eq!(fedavg_weight(1_000_000_000, 40), 40);
        assert_eq!(fedavg_weight(0, 40), 1);
        assert_eq!(fedavg_weight(5, 0), 1);
    }

    #[test]
    fn the_validator_accepts_a_good_upload_and_names_what_is_wrong_with_a_bad_one() {
        let e = expected();
        let good = vec![NamedTensor::new("w", vec![2], vec![0.5, 0.5])];
        assert_eq!(
            validate(&e, 1, 4, &report(Phase::Step, 2, 1, Some(good.clone()))),
            Ok(())
        );
        let nan = vec![NamedTensor::new("w", vec![2], vec![f32::NAN, 0.0])];
        let err = validate(&e, 1, 4, &report(Phase::Step, 2, 1, Some(nan))).unwrap_err();
        assert!(err.contains("non-finite value NaN at w[0]"), "{err}");
        let shape = vec![NamedTensor::new("w", vec![3], vec![0.0; 3])];
        let err = validate(&e, 1, 4, &report(Phase::Step, 2, 1, Some(shape))).unwrap_err();
        assert!(err.contains('w'), "{err}");
        let big = vec![NamedTensor::new("w", vec![2], vec![3.0, 4.0])];
        let err = validate(&e, 1, 4, &report(Phase::Step, 2, 1, Some(big))).unwrap_err();
        assert!(
            err.contains("update norm 5.0000 is above deploy.max_update_norm = 1"),
            "{err}"
        );
        let err = validate(&e, 1, 4, &report(Phase::Step, 1, 1, Some(good.clone()))).unwrap_err();
        assert!(
            err.contains("round 1 step, the server expects device 1 round 2 step"),
            "{err}"
        );
        let err = validate(&e, 1, 4, &report(Phase::Step, 2, 1, None)).unwrap_err();
        assert!(err.contains("holds no DPM parameters"), "{err}");
        let err = validate(&e, 1, 4, b"not a payload").unwrap_err();
        assert!(err.starts_with("the upload:"), "{err}");
    }

    #[test]
    fn a_part_that_does_not_belong_in_its_phase_is_refused() {
        let e = expected();
        // Device 0 has no reference: without the part check its step upload would pass.
        let clean = report(Phase::Step, 2, 0, None);
        assert_eq!(validate(&e, 0, 4, &clean), Ok(()));
        for part in [
            Part::Prediction("geography-slm.jsonl".into()),
            Part::Download,
            Part::Setup(0),
        ] {
            let mut p = Payload::decode(&clean, "test").unwrap();
            p.put(part.clone(), b"{}".to_vec());
            let err = validate(&e, 0, 4, &p.encode()).unwrap_err();
            assert!(
                err.contains(&format!("a device's step upload may not hold {part:?}")),
                "{err}"
            );
        }
    }
}
