//! One attacking device under each aggregation rule, differential privacy of the uploads and
//! the server's screen, end to end on the smoke config; and their bad values refused before
//! training. Needs the plugins built (`cargo build --workspace`).

use cotune_protocol::run_with;

mod common;
use common::*;

/// Bad values of `[privacy]`, `[attack]` and the aggregation's parameters are refused before
/// training, naming the key and the value.
#[test]
fn bad_privacy_attack_and_aggregation_values_are_refused() {
    let smoke = smoke_text();
    let with = |extra: &str| format!("{smoke}\n{extra}\n");
    let train = |line: &str| {
        smoke.replace(
            "transfer = \"local\"",
            &format!("transfer = \"local\"\n{line}"),
        )
    };
    let privacy = "[privacy]\nmode = \"central\"\nnoise_multiplier = 1.0";
    check_error(
        &with(&format!("{privacy}\nclip = -1.0")),
        &["privacy.clip", "-1"],
    );
    check_error(
        &with("[privacy]\nmode = \"local\"\nclip = 1.0\nnoise_multiplier = -0.5"),
        &["privacy.noise_multiplier", "-0.5"],
    );
    check_error(
        &with(&format!("{privacy}\nclip = 1.0\ndelta = 1.5")),
        &["privacy.delta", "1.5"],
    );
    check_error(
        &with("[privacy]\nmode = \"loud\"\nclip = 1.0\nnoise_multiplier = 1.0"),
        &["loud"],
    );
    check_error(&train("trim = 0.6"), &["train.trim", "0.6"]);
    check_error(&train("screen_ratio = 0.5"), &["train.screen_ratio", "0.5"]);
    // Krum with one byzantine device needs more than four uploads; smoke has two devices.
    check_error(
        &train("byzantine = 1").replace("aggregation = \"fedavg\"", "aggregation = \"krum\""),
        &["train.byzantine", "byzantine = 1", "2 devices"],
    );
    // Central noise goes on the FedAvg sum.
    check_error(
        &with(&format!("{privacy}\nclip = 1.0"))
            .replace("aggregation = \"fedavg\"", "aggregation = \"median\""),
        &["privacy.mode", "median"],
    );
    check_error(
        &with(&format!("{privacy}\nclip = 1.0"))
            .replace("method = \"co-plms\"", "method = \"standalone\""),
        &["privacy", "standalone"],
    );
    check_error(
        &with("[attack]\ndevice = 2\nkind = \"scale\""),
        &["attack.device", "2"],
    );
    check_error(
        &with("[attack]\ndevice = 0\nkind = \"scale\"\nfactor = -3.0"),
        &["attack.factor", "-3"],
    );
    check_error(&with("[attack]\ndevice = 0\nkind = \"flood\""), &["flood"]);
}

/// One attacking device under each rule, privacy noise, and the server's screen run end to end
/// on the smoke config; what happened to the uploads is recorded round by round.
#[test]
fn attacks_defences_and_privacy_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let run = |name: &str, train: &str, extra: &str| {
        let mut text = smoke_text();
        for line in train.lines() {
            text = match line.starts_with("aggregation") {
                true => text.replace("aggregation = \"fedavg\"", line),
                false => text.replace(
                    "transfer = \"local\"",
                    &format!("transfer = \"local\"\n{line}"),
                ),
            };
        }
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
        let dir = run_with(&options(path, &runs, &cache)).unwrap();
        let results = std::fs::read_to_string(dir.join("results.md")).unwrap();
        assert!(results.contains("## Uploads"), "{name}: {results}");
        metrics(&dir)
    };
    // NaN from device 0 under FedAvg: refused every round, named; the run goes on.
    let nan = run("nan", "", "[attack]\ndevice = 0\nkind = \"nan\"");
    for r in &nan[1..] {
        let u = r.uploads.as_ref().expect("uploads recorded");
        assert_eq!(u.attacker, Some(0));
        assert_eq!(u.server.refused.len(), 1, "{u:?}");
        assert_eq!(u.server.refused[0].device, 0);
        assert!(u.server.refused[0].reason.contains("NaN"), "{u:?}");
    }
    // A sign-flipped, scaled update under the median: accepted (the median needs no refusal).
    let median = run(
        "median",
        "aggregation = \"median\"",
        "[attack]\ndevice = 1\nkind = \"sign-flip\"\nfactor = 5.0",
    );
    let u = median[1].uploads.as_ref().unwrap();
    assert_eq!((u.server.rule.as_str(), u.attacker), ("median", Some(1)));
    assert!(u.server.refused.is_empty());
    // Central privacy: every update clipped to a tiny norm, epsilon growing with the rounds.
    let private = run(
        "private",
        "",
        "[privacy]\nmode = \"central\"\nclip = 0.001\nnoise_multiplier = 1.0",
    );
    let spent: Vec<_> = private[1..]
        .iter()
        .map(|r| r.uploads.as_ref().unwrap().privacy.unwrap())
        .collect();
    let eps: Vec<f64> = spent.iter().map(|s| s.epsilon.unwrap()).collect();
    assert!(eps[0] > 0.0 && eps[1] > eps[0], "{spent:?}");
    assert_eq!(spent[0].epsilon_round, spent[1].epsilon_round);
    let u = private[1].uploads.as_ref().unwrap();
    assert_eq!(u.clipped, vec![0, 1], "{u:?}");
    assert!(u.update_norms.iter().all(|(_, n)| *n > 0.001));
    // The same config gives the same numbers (the noise is seeded).
    let again = run(
        "private",
        "",
        "[privacy]\nmode = \"central\"\nclip = 0.001\nnoise_multiplier = 1.0",
    );
    assert_eq!(scores(&private), scores(&again));
    // The server's screen with one DPM per device: a scaled update is refused by its loss.
    let screened = run(
        "screen",
        "aggregation = \"per-device\"\nscreen_ratio = 1.5",
        "[attack]\ndevice = 1\nkind = \"scale\"\nfactor = 1000.0",
    )
    .into_iter()
    .skip(1)
    .map(|r| r.uploads.unwrap())
    .collect::<Vec<_>>();
    for u in &screened {
        assert_eq!(u.server.screen.len(), 2, "{u:?}");
        assert_eq!(u.server.refused.len(), 1, "{u:?}");
        assert_eq!(u.server.refused[0].device, 1, "{u:?}");
        assert!(u.server.refused[0].reason.contains("screen_ratio"), "{u:?}");
    }
}
