use std::collections::{HashMap, HashSet};

use cotune_data::normalize_question;

use super::*;
use crate::words::{lexicon_english, SHORT_WORDS};

/// A sample size per domain that every domain has.
fn sample(domain: &str, wanted: usize) -> usize {
    wanted.min(capacity(domain).unwrap())
}

fn numbers(question: &str) -> Vec<u64> {
    question
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect()
}

fn tokens(question: &str) -> Vec<String> {
    question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tokens of the question that are in `list`, in order.
fn listed(question: &str, list: &[&str]) -> Vec<String> {
    tokens(question)
        .into_iter()
        .filter(|t| list.contains(&t.as_str()))
        .collect()
}

/// The answer recomputed from the question text alone (independent of the generator's
/// tables, except the lexicon itself).
fn expected(domain: &str, question: &str) -> String {
    let n = numbers(question);
    let has = |word: &str| tokens(question).iter().any(|t| t == word);
    match domain {
        "unit_conversion" => {
            // Each unit in its base unit (millimetres, grams, millilitres).
            let base = |unit: &str| -> u64 {
                match unit.trim_end_matches('s') {
                    "millimetre" | "gram" | "millilitre" => 1,
                    "centimetre" => 10,
                    "metre" | "kilogram" | "litre" => 1000,
                    "kilometre" => 1_000_000,
                    other => panic!("unit {other} in {question}"),
                }
            };
            let words = tokens(question);
            let at = words.iter().position(|t| t.parse::<u64>().is_ok()).unwrap();
            let from = &words[at + 1];
            let units = [
                "millimetre",
                "centimetre",
                "metre",
                "kilometre",
                "gram",
                "kilogram",
                "litre",
                "millilitre",
            ];
            let to = words
                .iter()
                .enumerate()
                .find(|(i, t)| *i != at + 1 && units.contains(&t.trim_end_matches('s')))
                .unwrap()
                .1;
            let amount = n[0] * base(from);
            assert_eq!(amount % base(to), 0, "{question}");
            (amount / base(to)).to_string()
        }
        "addition" => (n[0] + n[1]).to_string(),
        "subtraction" => (n[0] - n[1]).to_string(),
        "multiplication" => (n[0] * n[1]).to_string(),
        "comparison" => n[0].max(n[1]).to_string(),
        "base_conversion" => {
            let radix = if has("binary") { 2 } else { 16 };
            let mut digits = Vec::new();
            let mut value = n[0];
            loop {
                digits.push(std::char::from_digit((value % radix) as u32, radix as u32).unwrap());
                value /= radix;
                if value == 0 {
                    break;
                }
            }
            digits.iter().rev().collect()
        }
        "calendar" => {
            let days = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ];
            let months = [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ];
            let names: &[&str] = if has("week") { &days } else { &months };
            let start = tokens(question)
                .iter()
                .find_map(|t| names.iter().position(|name| name == t))
                .unwrap() as i64;
            let k = n[0] as i64 * if has("after") { 1 } else { -1 };
            assert!(has("after") != has("before"), "{question}");
            names[(start + k).rem_euclid(names.len() as i64) as usize].to_string()
        }
        "word_reversal" => {
            let mut words = listed(question, &SHORT_WORDS);
            words.reverse();
            words.join(" ")
        }
        "word_sorting" => {
            let mut words = listed(question, &SHORT_WORDS);
            words.sort();
            words.join(" ")
        }
        "digit_sorting" => {
            let mut digits = n.clone();
            assert!(digits.iter().all(|&d| d < 10));
            digits.sort();
            let digits: Vec<String> = digits.iter().map(u64::to_string).collect();
            digits.join(" ")
        }
        "word_count" => listed(question, &SHORT_WORDS).len().to_string(),
        "copying" => listed(question, &SHORT_WORDS).join(" "),
        "successor" => {
            if has("after") {
                (n[0] + 1).to_string()
            } else {
                (n[0] - 1).to_string()
            }
        }
        lexicon_domain => {
            let lexicon = lexicon(lexicon_domain).unwrap();
            assert!(has(lexicon.name()), "{question}");
            let english: Vec<&str> = lexicon_english().collect();
            lexicon
                .translate(&listed(question, &english).join(" "))
                .unwrap()
        }
    }
}

#[test]
fn domains_are_listed_once_and_known() {
    let names: HashSet<&str> = DOMAINS.iter().copied().collect();
    assert_eq!(names.len(), DOMAINS.len());
    assert_eq!(DOMAINS.len(), 17);
    for domain in DOMAINS {
        assert!(capacity(domain).is_some(), "{domain}");
    }
}

#[test]
fn capacities_are_as_documented() {
    let expected = [
        ("unit_conversion", 9_990),
        ("addition", 8_100),
        ("subtraction", 4_095),
        ("multiplication", 7_920),
        ("comparison", 997_002),
        ("base_conversion", 5_120),
        ("calendar", 6_600),
        ("word_reversal", 11_908_560),
        ("word_sorting", 11_908_560),
        ("digit_sorting", 110_000),
        ("word_count", 5_469_653_597_080_740),
        ("copying", 11_912_100),
        ("successor", 19_998),
        ("lexicon_a", 302_400),
        ("lexicon_b", 302_400),
        ("lexicon_c", 302_400),
        ("lexicon_d", 302_400),
    ];
    for (domain, size) in expected {
        assert_eq!(capacity(domain), Some(size), "{domain}");
    }
    for domain in DOMAINS {
        if *domain != "subtraction" {
            assert!(capacity(domain).unwrap() >= 5_000, "{domain}");
        }
    }
}

#[test]
fn same_seed_same_records_other_seed_other_records() {
    for domain in DOMAINS {
        let count = 300;
        let first = generate(domain, count, 7).unwrap();
        assert_eq!(first.len(), count);
        assert_eq!(first, generate(domain, count, 7).unwrap(), "{domain}");
        assert_ne!(first, generate(domain, count, 8).unwrap(), "{domain}");
        // A smaller count gives the first records of a larger one.
        assert_eq!(
            generate(domain, 50, 7).unwrap(),
            first[..50].to_vec(),
            "{domain}"
        );
    }
}

#[test]
fn records_are_distinct_instances() {
    for domain in DOMAINS {
        let count = sample(domain, 5_000);
        let (spec, draws) = draw(domain, count, 3).unwrap();
        let instances: HashSet<(usize, u64)> = draws.iter().map(|d| (d.family, d.index)).collect();
        assert_eq!(instances.len(), count, "{domain}");
        // Rendered with one template, distinct draws are distinct questions: the decoding
        // does not map two draws to one instance.
        let canonical: HashSet<String> = draws
            .iter()
            .map(|d| (spec.render)(d.family, d.index, 0).0)
            .collect();
        assert_eq!(canonical.len(), count, "{domain}");
        let records = generate(domain, count, 3).unwrap();
        let questions: HashSet<&str> = records.iter().map(|r| r.question.as_str()).collect();
        assert_eq!(questions.len(), count, "{domain}");
        let normalized: HashSet<String> = records
            .iter()
            .map(|r| normalize_question(&r.question))
            .collect();
        assert_eq!(normalized.len(), count, "{domain}");
    }
}

#[test]
fn small_domains_decode_every_index_to_its_own_instance() {
    for domain in DOMAINS {
        let spec = domains::spec(domain).unwrap();
        if spec.capacity() > 20_000 {
            continue;
        }
        let mut seen = HashSet::new();
        for (family, f) in spec.families.iter().enumerate() {
            for index in 0..f.size {
                let (question, answer) = (spec.render)(family, index, 0);
                assert_eq!(answer, expected(domain, &question), "{question}");
                assert!(seen.insert(question.clone()), "{domain}: {question}");
            }
        }
        assert_eq!(seen.len() as u64, spec.capacity());
    }
}

#[test]
fn the_whole_capacity_can_be_drawn() {
    let all = generate("subtraction", 4_095, 0).unwrap();
    let pairs: HashSet<Vec<u64>> = all.iter().map(|r| numbers(&r.question)).collect();
    assert_eq!(pairs.len(), 4_095);
    assert!(pairs
        .iter()
        .all(|p| 10 <= p[1] && p[1] <= p[0] && p[0] <= 99));
}

#[test]
fn every_answer_is_the_one_recomputed_from_the_question() {
    for domain in DOMAINS {
        for record in generate(domain, sample(domain, 1_000), 11).unwrap() {
            assert_eq!(record.domain, *domain);
            assert_eq!(
                record.answer,
                expected(domain, &record.question),
                "{domain}: {}",
                record.question
            );
        }
    }
}

#[test]
fn questions_are_short_and_answers_are_short() {
    for domain in DOMAINS {
        for record in generate(domain, sample(domain, 5_000), 0).unwrap() {
            assert!(record.question.len() <= 120, "{}", record.question);
            assert!(record.question.is_ascii());
            let words = record.answer.split_whitespace().count();
            assert!((1..=6).contains(&words), "{domain}: {}", record.answer);
            assert_eq!(record.answer.trim(), record.answer);
        }
    }
    // The longest possible word-count question (nine of the longest words, longest template).
    let longest: usize = {
        let mut lengths: Vec<usize> = SHORT_WORDS.iter().map(|w| w.len()).collect();
        lengths.sort_unstable();
        lengths.iter().rev().take(9).sum::<usize>() + 8
    };
    assert!("How many words are there in: ?".len() + longest <= 120);
}

#[test]
fn value_ranges_are_as_specified() {
    for record in generate("addition", 2_000, 1).unwrap() {
        assert!(numbers(&record.question)
            .iter()
            .all(|n| (10..=99).contains(n)));
    }
    for record in generate("multiplication", 2_000, 1).unwrap() {
        let n = numbers(&record.question);
        assert!((2..=9).contains(&n[0]) && (10..=999).contains(&n[1]));
    }
    for record in generate("comparison", 2_000, 1).unwrap() {
        let n = numbers(&record.question);
        assert!(n[0] != n[1] && n.iter().all(|n| (1..=999).contains(n)));
    }
    for record in generate("successor", 2_000, 1).unwrap() {
        assert!((1..=9_999).contains(&numbers(&record.question)[0]));
    }
    let mut lengths = HashMap::new();
    for record in generate("word_count", 2_000, 1).unwrap() {
        *lengths.entry(record.answer.clone()).or_insert(0) += 1;
    }
    // Every count 2..=9 about equally common (250 expected each).
    assert_eq!(lengths.len(), 8);
    assert!(lengths.values().all(|&n| n > 180), "{lengths:?}");
}

#[test]
fn each_domain_uses_every_template() {
    for domain in DOMAINS {
        let (spec, draws) = draw(domain, 200, 5).unwrap();
        let used: HashSet<usize> = draws.iter().map(|d| d.template).collect();
        assert!(spec.templates >= 2 && spec.templates <= 3, "{domain}");
        assert_eq!(used.len(), spec.templates, "{domain}");
        // And the phrasings are different texts.
        let d = draws[0];
        let phrasings: HashSet<String> = (0..spec.templates)
            .map(|t| (spec.render)(d.family, d.index, t).0)
            .collect();
        assert_eq!(phrasings.len(), spec.templates, "{domain}");
    }
}

#[test]
fn phrasings_of_an_instance_share_their_content_words_and_answer() {
    for domain in DOMAINS {
        let (spec, draws) = draw(domain, sample(domain, 500), 9).unwrap();
        for d in draws {
            let (first, answer) = (spec.render)(d.family, d.index, 0);
            for template in 1..spec.templates {
                let (other, other_answer) = (spec.render)(d.family, d.index, template);
                assert_eq!(
                    content_words(&first),
                    content_words(&other),
                    "{first} / {other}"
                );
                assert_eq!(answer, other_answer);
            }
        }
    }
    assert_eq!(
        content_words("How many metres are in 7 kilometres?"),
        content_words("Convert 7 kilometres to metres.")
    );
}

#[test]
fn errors_name_the_domain_and_the_value() {
    let error = generate("astrology", 10, 0).unwrap_err().to_string();
    assert!(
        error.contains("astrology") && error.contains("addition"),
        "{error}"
    );
    assert_eq!(capacity("astrology"), None);
    let error = write_domain(Path::new("/nonexistent-never"), "astrology", 1, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("astrology"), "{error}");
    let error = generate("subtraction", 4_096, 0).unwrap_err().to_string();
    assert!(
        error.contains("subtraction") && error.contains("4096") && error.contains("4095"),
        "{error}"
    );
    let error = generate("calendar", 6_601, 0).unwrap_err().to_string();
    assert!(
        error.contains("calendar") && error.contains("6601"),
        "{error}"
    );
}

#[test]
fn lexicons_do_not_depend_on_the_seed() {
    // Read each language back from the records of two seeds: the same English word always
    // gets the same made-up word.
    for domain in &DOMAINS[13..] {
        let english: Vec<&str> = lexicon_english().collect();
        let mut learnt: HashMap<String, String> = HashMap::new();
        for seed in [1, 2, 99] {
            for record in generate(domain, 2_000, seed).unwrap() {
                let words = listed(&record.question, &english);
                let made_up: Vec<&str> = record.answer.split(' ').collect();
                assert_eq!(words.len(), made_up.len());
                for (e, m) in words.iter().zip(made_up) {
                    let known = learnt.entry(e.clone()).or_insert_with(|| m.to_string());
                    assert_eq!(known, m, "{domain}: {e}");
                }
            }
        }
        assert_eq!(learnt.len(), 150, "{domain}");
        assert_eq!(lexicon(domain).unwrap(), lexicon(domain).unwrap());
    }
    assert!(lexicon("addition").is_none());
}

#[test]
fn lexicons_are_well_formed_and_distinct() {
    let english: HashSet<&str> = lexicon_english().collect();
    assert_eq!(english.len(), 150);
    let mut names = HashSet::new();
    let mut languages = Vec::new();
    for domain in &DOMAINS[13..] {
        let lexicon = lexicon(domain).unwrap();
        assert!(names.insert(lexicon.name()));
        assert!(!english.contains(lexicon.name().to_lowercase().as_str()));
        let words: Vec<&str> = lexicon.entries().map(|(_, w)| w).collect();
        assert_eq!(words.len(), 150);
        assert_eq!(words.iter().collect::<HashSet<_>>().len(), 150, "{domain}");
        for word in &words {
            let chars: Vec<char> = word.chars().collect();
            assert!(chars.len() == 4 || chars.len() == 6, "{word}");
            for pair in chars.chunks(2) {
                assert!(
                    !"aeiou".contains(pair[0]) && "aeiou".contains(pair[1]),
                    "{word}"
                );
            }
            assert!(!english.contains(word) && !SHORT_WORDS.contains(word));
        }
        assert_eq!(lexicon.word("cat"), Some(words[0]));
        assert!(lexicon.word("runs").is_some_and(|w| !w.is_empty()));
        assert_eq!(lexicon.translate("cat flarp"), None);
        languages.push(words.into_iter().map(str::to_string).collect::<Vec<_>>());
    }
    for (i, a) in languages.iter().enumerate() {
        for b in &languages[i + 1..] {
            let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
            assert!(same < 10, "{same} shared words");
        }
    }
}

#[test]
fn word_lists_hold_no_function_or_template_words() {
    let template_words = [
        "reverse",
        "order",
        "words",
        "alphabetical",
        "digits",
        "ascending",
        "repeat",
        "after",
        "before",
        "number",
        "translate",
    ];
    let short: HashSet<&str> = SHORT_WORDS.iter().copied().collect();
    assert_eq!(short.len(), SHORT_WORDS.len());
    for word in SHORT_WORDS.iter().copied().chain(lexicon_english()) {
        assert!(!FUNCTION_WORDS.contains(&word), "{word}");
        assert!(!template_words.contains(&word), "{word}");
    }
}

#[test]
fn files_are_json_lines_in_the_data_format() {
    let dir = std::env::temp_dir().join(format!("cotune-skills-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = write_domain(&dir.join("nested"), "calendar", 40, 4).unwrap();
    assert_eq!(path, dir.join("nested").join("calendar.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("{\"domain\": \"calendar\", \"question\": \""),
        "{first}"
    );
    assert_eq!(
        cotune_data::load_jsonl(&path).unwrap(),
        generate("calendar", 40, 4).unwrap()
    );
    let written = write_all(&dir, 4_500, 2).unwrap();
    assert_eq!(written.len(), DOMAINS.len());
    for w in &written {
        let expected_rows = if w.domain == "subtraction" {
            4_095
        } else {
            4_500
        };
        assert_eq!(w.rows, expected_rows, "{}", w.domain);
        assert_eq!(
            std::fs::read_to_string(&w.path).unwrap().lines().count(),
            w.rows
        );
    }
    // Only the domain files (and the nested folder) remain: no temporary files.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), DOMAINS.len() + 1, "{left:?}");
    assert!(left.iter().all(|f| f.ends_with(".jsonl") || f == "nested"));
    std::fs::remove_dir_all(&dir).unwrap();
}
