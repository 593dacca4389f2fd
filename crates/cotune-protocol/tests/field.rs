//! End-to-end runs of the field benchmark (`configs/field-smoke.toml`). Needs the plugins built
//! (`cargo build --workspace`).

use cotune_protocol::run_with;

mod common;
use common::*;

/// The field benchmark (`configs/field-smoke.toml`): prompts without answers, answered by the
/// proxy (co-plms), by the SLM itself (the no-teaching control), by the LLM sent to the device
/// (llm-kd), or the LLM's answers to public prompts (fedmkt); every method runs, and each
/// device's transfer set is its labelled records plus the answered prompts.
#[test]
fn the_field_benchmark_runs_on_prompts_without_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let text = std::fs::read_to_string(root().join("configs/field-smoke.toml")).unwrap();
    let cases = [
        ("co-plms", ""),
        (
            "co-plms",
            "prompt_labeller = \"own\"\nslm = { learning_rate = 3e-3, batch_size = 16, kl_weight = 0.0 }",
        ),
        ("llm-kd", ""),
        ("fedmkt", ""),
        ("standalone", ""),
    ];
    for (k, (method, extra)) in cases.into_iter().enumerate() {
        let mut t = text.replace("method = \"co-plms\"", &format!("method = \"{method}\""));
        if !extra.is_empty() {
            t = t.replace("slm = { learning_rate = 3e-3, batch_size = 16 }", extra);
        }
        let path = tmp.path().join(format!("field-{k}.toml"));
        std::fs::write(&path, t).unwrap();
        let run = run_with(&options(path, &runs, &cache))
            .unwrap_or_else(|e| panic!("{method} {extra}: {e:#}"));
        check_outputs(&run, 1);
        let results = std::fs::read_to_string(run.join("results.md")).unwrap();
        assert!(results.contains("## Knowledge flow"), "{results}");
        assert!(results.contains("| lexicon_c |"), "{results}");
        let records = metrics(&run);
        let first = &records[1].devices;
        match method {
            // co-plms: 20 labelled records and up to 40 answered prompts (an empty answer is
            // left out); llm-kd counts the answered prompts alone.
            "co-plms" | "llm-kd" => assert!(
                first.iter().all(|d| {
                    let (n, labelled) = (
                        d.losses.transfer_examples,
                        20 * (method == "co-plms") as usize,
                    );
                    n > labelled && n <= labelled + 40
                }),
                "{method}: {:?}",
                first
                    .iter()
                    .map(|d| d.losses.transfer_examples)
                    .collect::<Vec<_>>()
            ),
            "fedmkt" => assert!(records[1].llm.is_some(), "fedmkt trains the LLM"),
            _ => {}
        }
        // co-plms: every one of the round's 20 server prompts was answered by the surer of the
        // LLM and the proxy, and counted under its domain.
        if method == "co-plms" {
            let answers = &records[1].server_losses.proxy_answers;
            let (won, total) = answers
                .values()
                .fold((0, 0), |(w, t), (a, b)| (w + a, t + b));
            assert_eq!(total, 20, "{answers:?}");
            assert!(won <= total, "{answers:?}");
            assert!(results.contains("proxy answered"), "{results}");
        }
        match method {
            "co-plms" | "llm-kd" | "fedmkt" => {}
            _ => assert!(first.iter().all(|d| d.bytes_up == 0)),
        }
    }
}
