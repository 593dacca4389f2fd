//! The run's summary files: `results.md` and `results.csv` (the last round per device, the
//! LLM before and after, and every round's averages) and the plots `plots/em.svg` and
//! `plots/rouge_l.svg`.

use std::path::Path;

use anyhow::Context;

use crate::config::ExperimentConfig;
use crate::plot;
use crate::records::{DeviceRecord, RoundRecord, Scores};

fn pct(s: Option<Scores>, f: fn(&Scores) -> f64) -> String {
    s.map(|s| format!("{:.2}", 100.0 * f(&s)))
        .unwrap_or_else(|| "-".into())
}

type Pick = fn(&DeviceRecord) -> Option<Scores>;
type Metric = fn(&Scores) -> f64;

/// The mean over `devices` that have the score, in %, or `-`.
fn average(devices: &[DeviceRecord], pick: Pick, metric: Metric) -> String {
    let v: Vec<f64> = devices
        .iter()
        .filter_map(pick)
        .map(|s| metric(&s))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.2}", 100.0 * v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The four averages of a results line: SLM EM and Rouge-L, DPM EM and Rouge-L.
fn averages(devices: &[DeviceRecord]) -> [String; 4] {
    [
        average(devices, |d| d.slm, |s| s.em),
        average(devices, |d| d.slm, |s| s.rouge_l),
        average(devices, |d| d.dpm, |s| s.em),
        average(devices, |d| d.dpm, |s| s.rouge_l),
    ]
}

/// Writes `results.md` and `results.csv` from the recorded rounds, and the plots.
pub(crate) fn write_results(
    run_dir: &Path,
    config: &ExperimentConfig,
    llm_label: &str,
    records: &[RoundRecord],
) -> anyhow::Result<()> {
    let last = records.last().context("no rounds recorded")?;
    let method = config.method.as_str();
    let split = config.eval_split.describe();
    let mut md = format!(
        "# {} ({method})\n\nFinal round {}; scores in % on each device's {split} split; bytes \
         are means per round.\n\n",
        config.name, last.round
    );
    let mut csv = String::from(
        "method,device,slm,slm_em,slm_rouge_l,dpm_em,dpm_rouge_l,bytes_up_per_round,bytes_down_per_round\n",
    );
    device_table(&mut md, &mut csv, method, records);
    llm_table(&mut md, &mut csv, method, llm_label, records);
    if let Some(first) = records.first().filter(|r| r.round == 0) {
        md.push_str("\n## Before co-tuning (round 0, %)\n\n");
        md.push_str(&round_zero_table(first, config));
    }
    if let Some(first) = records.first().filter(|r| r.round == 0) {
        md.push_str(&knowledge_flow_table(first, last, config));
    }
    round_table(&mut md, records);
    uploads_table(&mut md, config, records);
    std::fs::write(run_dir.join("results.md"), md)?;
    std::fs::write(run_dir.join("results.csv"), csv)?;
    write_plots(run_dir, config, records)?;
    Ok(())
}

/// The last round per device, with each device's mean bytes per round, and their average.
fn device_table(md: &mut String, csv: &mut String, method: &str, records: &[RoundRecord]) {
    let Some(last) = records.last() else { return };
    let rounds = records.len().saturating_sub(1).max(1) as f64;
    md.push_str(
        "| device | SLM | SLM EM | SLM Rouge-L | DPM EM | DPM Rouge-L | bytes up | bytes down |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (i, d) in last.devices.iter().enumerate() {
        let (up, down) = records.iter().skip(1).fold((0u64, 0u64), |(u, d), r| {
            (u + r.devices[i].bytes_up, d + r.devices[i].bytes_down)
        });
        let (up, down) = (up as f64 / rounds, down as f64 / rounds);
        let scores = [
            pct(d.slm, |s| s.em),
            pct(d.slm, |s| s.rouge_l),
            pct(d.dpm, |s| s.em),
            pct(d.dpm, |s| s.rouge_l),
        ];
        let (name, arch) = (&d.device, &d.slm_architecture);
        md.push_str(&format!(
            "| {name} | {arch} | {} | {up:.0} | {down:.0} |\n",
            scores.join(" | ")
        ));
        csv.push_str(&format!(
            "{method},{name},{arch},{},{up:.0},{down:.0}\n",
            scores.join(",")
        ));
    }
    let avg = averages(&last.devices);
    md.push_str(&format!("| **average** | | {} | | |\n", avg.join(" | ")));
    csv.push_str(&format!("{method},average,,{},,\n", avg.join(",")));
}

/// The LLM per domain before (round 0) and after the last round that evaluated it.
fn llm_table(
    md: &mut String,
    csv: &mut String,
    method: &str,
    llm_label: &str,
    records: &[RoundRecord],
) {
    let Some(l) = records.iter().rev().find_map(|r| r.llm.as_ref()) else {
        return;
    };
    let before = records.first().and_then(|r| r.llm.as_ref());
    md.push_str(
        "\n## Server LLM\n\n| domain | before (round 0) EM | Rouge-L | final EM | Rouge-L |\n\
         |---|---|---|---|---|\n",
    );
    let mut rows: Vec<(String, Scores, Option<Scores>)> = l
        .per_domain
        .iter()
        .map(|(d, s)| {
            let b = before.and_then(|b| b.per_domain.iter().find(|(x, _)| x == d).map(|x| x.1));
            (d.clone(), *s, b)
        })
        .collect();
    rows.push((
        "**macro average**".into(),
        l.macro_average,
        before.map(|b| b.macro_average),
    ));
    for (d, s, b) in rows {
        md.push_str(&format!(
            "| {d} | {} | {} | {} | {} |\n",
            pct(b, |s| s.em),
            pct(b, |s| s.rouge_l),
            pct(Some(s), |s| s.em),
            pct(Some(s), |s| s.rouge_l)
        ));
        csv.push_str(&format!(
            "{method},llm:{},{llm_label},{},{},,,,\n",
            d.trim_matches('*'),
            pct(Some(s), |s| s.em),
            pct(Some(s), |s| s.rouge_l)
        ));
    }
}

/// Where knowledge sits before any round: per device domain, the EM and Rouge-L of the LLM, of
/// the DPM (with its fresh adapters) and of the SLM, and the share of the LLM's EM the DPM
/// keeps; then the averages over devices. Empty columns show `-`. (Devices sharing a domain
/// show the LLM's score on the whole domain.)
pub(crate) fn round_zero_table(record: &RoundRecord, config: &ExperimentConfig) -> String {
    let llm_on = |i: usize| -> Option<Scores> {
        let llm = record.llm.as_ref()?;
        let domain = &config.devices.get(i)?.domain;
        llm.per_domain
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, s)| *s)
    };
    let kept = |dpm: Option<Scores>, llm: Option<Scores>| match (dpm, llm) {
        (Some(d), Some(l)) if l.em > 0.0 => format!("{:.0}%", 100.0 * d.em / l.em),
        _ => "-".into(),
    };
    let mut md = String::from(
        "| domain | SLM | LLM EM | LLM Rouge-L | DPM EM | DPM Rouge-L | SLM EM | SLM Rouge-L | \
         DPM keeps of the LLM's EM |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut columns: [Vec<f64>; 6] = Default::default();
    for (i, d) in record.devices.iter().enumerate() {
        let llm = llm_on(i);
        let cells = [llm, d.dpm, d.slm];
        for (k, s) in cells.iter().enumerate() {
            if let Some(s) = s {
                columns[2 * k].push(s.em);
                columns[2 * k + 1].push(s.rouge_l);
            }
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            d.device,
            d.slm_architecture,
            pct(llm, |s| s.em),
            pct(llm, |s| s.rouge_l),
            pct(d.dpm, |s| s.em),
            pct(d.dpm, |s| s.rouge_l),
            pct(d.slm, |s| s.em),
            pct(d.slm, |s| s.rouge_l),
            kept(d.dpm, llm)
        ));
    }
    let mean = |v: &Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let means: Vec<Option<f64>> = columns.iter().map(mean).collect();
    let cell = |m: Option<f64>| m.map_or("-".into(), |m| format!("{:.2}", 100.0 * m));
    let as_scores = |k: usize| {
        means[2 * k].map(|em| Scores {
            em,
            rouge_l: means[2 * k + 1].unwrap_or(0.0),
        })
    };
    md.push_str(&format!(
        "| **average** | | {} | {} | {} | {} | {} | {} | {} |\n",
        cell(means[0]),
        cell(means[1]),
        cell(means[2]),
        cell(means[3]),
        cell(means[4]),
        cell(means[5]),
        kept(as_scores(1), as_scores(0))
    ));
    md
}

/// Where knowledge went, per device and per direction (EM %): from the LLM to each SLM, what
/// the teacher knows of the device's domain (the LLM on the server's records of it), what the
/// proxy keeps at round 0 and at the end, and the student at round 0 and at the end; from the
/// devices to the LLM, per device domain, the LLM at round 0 and at the end beside what the
/// domain's proxies and SLMs hold at the end.
pub(crate) fn knowledge_flow_table(
    first: &RoundRecord,
    last: &RoundRecord,
    config: &ExperimentConfig,
) -> String {
    let llm_on = |r: &RoundRecord, domain: &str| -> Option<Scores> {
        r.llm
            .as_ref()?
            .per_domain
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, s)| *s)
    };
    let em = |s: Option<Scores>| pct(s, |s| s.em);
    let mut md = format!(
        "\n## Knowledge flow (EM %, round 0 -> round {})\n\nLLM -> SLM, per device: what the \
         teacher knows of the device's domain, what the proxy keeps, what the student has.\n\n\
         | device | domain | LLM (teacher) | proxy round 0 | proxy final | SLM round 0 | SLM \
         final |\n|---|---|---|---|---|---|---|\n",
        last.round
    );
    for (i, d0) in first.devices.iter().enumerate() {
        let Some(entry) = config.devices.get(i) else {
            continue;
        };
        let d1 = last.devices.get(i);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            d0.device,
            entry.domain,
            em(llm_on(first, &entry.domain)),
            em(d0.dpm),
            em(d1.and_then(|d| d.dpm)),
            em(d0.slm),
            em(d1.and_then(|d| d.slm)),
        ));
    }
    md.push_str(
        "\nDevices -> LLM, per device domain: the LLM on the server's records of it, beside what \
         the domain's proxies and SLMs hold at the end (mean over its devices), and how many of \
         the last round's server prompts of the domain the proxy answered rather than the LLM \
         (`server_prompt_labeller = \"surer\"`).\n\n\
         | domain | LLM round 0 | LLM final | proxies final | SLMs final | proxy answered |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut domains: Vec<&str> = Vec::new();
    for d in &config.devices {
        if !domains.contains(&d.domain.as_str()) {
            domains.push(&d.domain);
        }
    }
    for domain in domains {
        let mean = |pick: fn(&DeviceRecord) -> Option<Scores>| {
            let v: Vec<f64> = config
                .devices
                .iter()
                .zip(&last.devices)
                .filter(|(e, _)| e.domain == domain)
                .filter_map(|(_, d)| pick(d).map(|s| s.em))
                .collect();
            (!v.is_empty()).then(|| Scores {
                em: v.iter().sum::<f64>() / v.len() as f64,
                rouge_l: 0.0,
            })
        };
        let answered = match last.server_losses.proxy_answers.get(domain) {
            Some((by_proxy, of)) => format!("{by_proxy} of {of}"),
            None => "-".to_string(),
        };
        md.push_str(&format!(
            "| {domain} | {} | {} | {} | {} | {answered} |\n",
            em(llm_on(first, domain)),
            em(llm_on(last, domain)),
            em(mean(|d| d.dpm)),
            em(mean(|d| d.slm)),
        ));
    }
    md
}

/// Every round's averages over devices, the LLM's macro average and the wall time.
fn round_table(md: &mut String, records: &[RoundRecord]) {
    md.push_str(
        "\n## Per round (average over devices, %)\n\n| round | SLM EM | SLM Rouge-L | DPM EM | \
         DPM Rouge-L | LLM EM | LLM Rouge-L | seconds |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let llm = r.llm.as_ref().map(|l| l.macro_average);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} |\n",
            r.round,
            averages(&r.devices).join(" | "),
            pct(llm, |s| s.em),
            pct(llm, |s| s.rouge_l),
            r.seconds
        ));
    }
}

/// What happened to the uploads round by round, when the run records it: privacy spent,
/// clipping, the attacker, the server's refusals and rule.
fn uploads_table(md: &mut String, config: &ExperimentConfig, records: &[RoundRecord]) {
    if records.iter().all(|r| r.uploads.is_none()) {
        return;
    }
    md.push_str("\n## Uploads\n\n");
    if let Some(p) = &config.privacy {
        md.push_str(&format!(
            "Differential privacy: {} noise, noise multiplier {}, clip {}, delta {:e}; epsilon \
             by the Rényi accountant of the sampled Gaussian mechanism, one release a round, \
             neighbouring datasets differing in one device's data.\n\n",
            p.mode.name(),
            p.noise_multiplier,
            p.clip,
            p.delta
        ));
    }
    if let Some(a) = &config.attack {
        md.push_str(&format!(
            "Attack: device {} sends `{}` updates (factor {}).\n\n",
            a.device,
            a.kind.name(),
            a.factor
        ));
    }
    md.push_str(
        "| round | rule | epsilon (round) | epsilon (so far) | mean update norm | clipped | refused |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let Some(u) = &r.uploads else { continue };
        // No privacy: a dash; privacy without a guarantee (no noise): infinite.
        let eps = |f: fn(&crate::records::PrivacySpent) -> Option<f64>| {
            u.privacy.as_ref().map_or("-".to_string(), |p| {
                f(p).map_or("∞".to_string(), |e| format!("{e:.3}"))
            })
        };
        let norm = match u.update_norms.len() {
            0 => "-".to_string(),
            n => format!(
                "{:.3}",
                u.update_norms.iter().map(|(_, x)| x).sum::<f64>() / n as f64
            ),
        };
        let refused: Vec<String> = u
            .server
            .refused
            .iter()
            .map(|x| format!("device {}", x.device))
            .collect();
        let clipped: Vec<String> = u.clipped.iter().map(usize::to_string).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {norm} | {} | {} |\n",
            r.round,
            u.server.rule,
            eps(|p| p.epsilon_round),
            eps(|p| p.epsilon),
            if clipped.is_empty() {
                "-".to_string()
            } else {
                clipped.join(", ")
            },
            if refused.is_empty() {
                "-".to_string()
            } else {
                refused.join(", ")
            },
        ));
    }
}

/// `plots/em.svg` and `plots/rouge_l.svg`: each device's SLM score per round, and the LLM's
/// macro average (dashed) when the method changes it.
fn write_plots(
    run_dir: &Path,
    config: &ExperimentConfig,
    records: &[RoundRecord],
) -> anyhow::Result<()> {
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir)?;
    let metrics: [(&str, &str, Metric); 2] = [
        ("em", "exact match (%)", |s| s.em),
        ("rouge_l", "Rouge-L F1 (%)", |s| s.rouge_l),
    ];
    for (file, label, f) in metrics {
        let mut series = Vec::new();
        if let Some(first) = records.first() {
            for (i, d) in first.devices.iter().enumerate() {
                series.push(plot::Series {
                    label: format!("{} ({})", d.device, d.slm_architecture),
                    points: records
                        .iter()
                        .filter_map(|r| {
                            r.devices
                                .get(i)
                                .and_then(|d| d.slm)
                                .map(|s| (r.round, 100.0 * f(&s)))
                        })
                        .collect(),
                    dashed: false,
                });
            }
        }
        let llm: Vec<(usize, f64)> = records
            .iter()
            .filter_map(|r| {
                r.llm
                    .as_ref()
                    .map(|l| (r.round, 100.0 * f(&l.macro_average)))
            })
            .collect();
        if !llm.is_empty() {
            series.push(plot::Series {
                label: "server LLM (macro)".into(),
                points: llm,
                dashed: true,
            });
        }
        let title = format!(
            "{}: {} per round, SLMs ({})",
            config.name,
            label,
            config.method.as_str()
        );
        std::fs::write(
            dir.join(format!("{file}.svg")),
            plot::line_chart(&title, label, &series),
        )?;
    }
    Ok(())
}
