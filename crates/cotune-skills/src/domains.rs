//! The domains: how many distinct instances each has, and how an instance becomes a question
//! and its answer.
//!
//! A domain's instances are split into families (kilometres to metres, three-word phrases,
//! ...), each numbered `0..size`; an instance is a (family, index) pair and is decoded from it,
//! so two different pairs are always two different instances. Which template phrases an
//! instance is chosen separately and does not change the instance.

use crate::lexicon::{lexicon, LEXICON_DOMAINS};
use crate::words::{ADJECTIVES, MONTHS, NOUNS, SHORT_WORDS, VERBS, WEEKDAYS};

/// A family of instances: how many there are, and how often the sampler picks the family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub size: u64,
    pub weight: u64,
}

/// Renders instance `index` of family `family` with template `template`: (question, answer).
type Render = Box<dyn Fn(usize, u64, usize) -> (String, String)>;

/// One domain: its families, its number of templates and its renderer.
pub(crate) struct Spec {
    pub families: Vec<Family>,
    pub templates: usize,
    pub render: Render,
}

impl Spec {
    pub fn capacity(&self) -> u64 {
        self.families.iter().map(|f| f.size).sum()
    }
}

/// Every domain's name, in the order files are written.
pub(crate) const NAMES: [&str; 17] = [
    "unit_conversion",
    "addition",
    "subtraction",
    "multiplication",
    "comparison",
    "base_conversion",
    "calendar",
    "word_reversal",
    "word_sorting",
    "digit_sorting",
    "word_count",
    "copying",
    "successor",
    LEXICON_DOMAINS[0],
    LEXICON_DOMAINS[1],
    LEXICON_DOMAINS[2],
    LEXICON_DOMAINS[3],
];

/// The specification of a domain; `None` for an unknown name.
pub(crate) fn spec(domain: &str) -> Option<Spec> {
    Some(match domain {
        "unit_conversion" => unit_conversion(),
        "addition" => two_numbers("plus", |a, b| a + b, false),
        "subtraction" => two_numbers("minus", |a, b| a - b, true),
        "multiplication" => multiplication(),
        "comparison" => comparison(),
        "base_conversion" => base_conversion(),
        "calendar" => calendar(),
        "word_reversal" => word_order(
            &[
                "Reverse the order of the words: {w}",
                "Write the words in reverse order: {w}",
                "Give the words {w} in reverse order.",
            ],
            |words| words.iter().rev().copied().collect(),
        ),
        "word_sorting" => word_order(
            &[
                "Write the words in alphabetical order: {w}",
                "Give the words {w} in alphabetical order.",
                "What are the words {w} in alphabetical order?",
            ],
            |words| {
                let mut sorted = words.to_vec();
                sorted.sort_unstable();
                sorted
            },
        ),
        "digit_sorting" => digit_sorting(),
        "word_count" => word_count(),
        "copying" => copying(),
        "successor" => successor(),
        name if LEXICON_DOMAINS.contains(&name) => lexicon_domain(name),
        _ => return None,
    })
}

/// Fills `{w}`-style placeholders: `fill(t, &[("{a}", "3")])`.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(key, value)
        })
}

/// The number of sequences of `k` distinct items out of `n`.
fn arrangements(n: usize, k: usize) -> u64 {
    (0..k).map(|j| (n - j) as u64).product()
}

/// Decodes `index` in `0..arrangements(n, k)` into `k` distinct items of `0..n` (a bijection:
/// mixed radix with radices n, n-1, ..., each digit picking one of the items left).
fn arrangement(mut index: u64, n: usize, k: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut picked = Vec::with_capacity(k);
    for j in 0..k {
        let radix = (n - j) as u64;
        picked.push(left.remove((index % radix) as usize));
        index /= radix;
    }
    picked
}

/// Families of `k`-word sequences of distinct [`SHORT_WORDS`], one family per length in
/// `lengths`, each picked equally often (so every length is equally common).
fn word_families(lengths: std::ops::RangeInclusive<usize>) -> (Vec<Family>, Vec<usize>) {
    let lengths: Vec<usize> = lengths.collect();
    let families = lengths
        .iter()
        .map(|&k| Family {
            size: arrangements(SHORT_WORDS.len(), k),
            weight: 1,
        })
        .collect();
    (families, lengths)
}

fn short_words(index: u64, k: usize) -> Vec<&'static str> {
    arrangement(index, SHORT_WORDS.len(), k)
        .into_iter()
        .map(|i| SHORT_WORDS[i])
        .collect()
}

/// Metric conversions by a power of ten, both ways, with whole-number answers.
///
/// Families: each (unit pair, direction); index `v - 1` for a quantity of `v` = 1..=999 of the
/// larger unit. Up: "7 kilometres" -> 7000 (metres); down: "7000 metres" -> 7 (kilometres).
fn unit_conversion() -> Spec {
    // (larger singular, larger plural, smaller singular, smaller plural, factor)
    const PAIRS: [(&str, &str, &str, &str, u64); 5] = [
        ("kilometre", "kilometres", "metre", "metres", 1000),
        ("metre", "metres", "centimetre", "centimetres", 100),
        ("centimetre", "centimetres", "millimetre", "millimetres", 10),
        ("kilogram", "kilograms", "gram", "grams", 1000),
        ("litre", "litres", "millilitre", "millilitres", 1000),
    ];
    const TEMPLATES: [&str; 3] = [
        "How many {to} are in {v} {from}?",
        "Convert {v} {from} to {to}.",
        "What is {v} {from} in {to}?",
    ];
    let families = (0..2 * PAIRS.len())
        .map(|_| Family {
            size: 999,
            weight: 999,
        })
        .collect();
    Spec {
        families,
        templates: TEMPLATES.len(),
        render: Box::new(|family, index, template| {
            let (big_one, big_many, _, small_many, factor) = PAIRS[family / 2];
            let big = index + 1;
            let (value, from, to, answer) = if family % 2 == 0 {
                let from = if big == 1 { big_one } else { big_many };
                (big, from, small_many, big * factor)
            } else {
                (big * factor, small_many, big_many, big)
            };
            let question = fill(
                TEMPLATES[template],
                &[("{v}", &value.to_string()), ("{from}", from), ("{to}", to)],
            );
            (question, answer.to_string())
        }),
    }
}

/// `a <op> b` for two numbers 10..=99: all ordered pairs, or with `ordered` only b <= a.
fn two_numbers(op: &'static str, apply: fn(u64, u64) -> u64, ordered: bool) -> Spec {
    // (a, b) pairs in a fixed order, decoded by index.
    let pairs: Vec<(u64, u64)> = (10..=99)
        .flat_map(|a| (10..=99).map(move |b| (a, b)))
        .filter(|&(a, b)| !ordered || b <= a)
        .collect();
    let templates = [
        format!("What is {{a}} {op} {{b}}?"),
        format!("Compute {{a}} {op} {{b}}."),
        format!("Calculate {{a}} {op} {{b}}."),
    ];
    let size = pairs.len() as u64;
    Spec {
        families: vec![Family { size, weight: size }],
        templates: templates.len(),
        render: Box::new(move |_, index, template| {
            let (a, b) = pairs[index as usize];
            let question = fill(
                &templates[template],
                &[("{a}", &a.to_string()), ("{b}", &b.to_string())],
            );
            (question, apply(a, b).to_string())
        }),
    }
}

/// A one-digit factor (2..=9) times a number 10..=999.
fn multiplication() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "What is {a} times {b}?",
        "Compute {a} times {b}.",
        "Calculate {a} times {b}.",
    ];
    let size = 8 * 990;
    Spec {
        families: vec![Family { size, weight: size }],
        templates: TEMPLATES.len(),
        render: Box::new(|_, index, template| {
            let (a, b) = (2 + index / 990, 10 + index % 990);
            let question = fill(
                TEMPLATES[template],
                &[("{a}", &a.to_string()), ("{b}", &b.to_string())],
            );
            (question, (a * b).to_string())
        }),
    }
}

/// The larger of two distinct numbers 1..=999 (ordered pairs).
fn comparison() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "Which is larger, {a} or {b}?",
        "What is the larger of {a} and {b}?",
        "Give the larger of {a} and {b}.",
    ];
    let size = 999 * 998;
    Spec {
        families: vec![Family { size, weight: size }],
        templates: TEMPLATES.len(),
        render: Box::new(|_, index, template| {
            let a = 1 + index / 998;
            // b runs over 1..=999 without a.
            let mut b = 1 + index % 998;
            if b >= a {
                b += 1;
            }
            let question = fill(
                TEMPLATES[template],
                &[("{a}", &a.to_string()), ("{b}", &b.to_string())],
            );
            (question, a.max(b).to_string())
        }),
    }
}

/// Decimal to binary (0..=1023) and to hexadecimal (0..=4095, lowercase digits, no prefix).
fn base_conversion() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "What is the decimal number {n} in {base}?",
        "Convert the decimal number {n} to {base}.",
        "Write the decimal number {n} in {base}.",
    ];
    Spec {
        families: vec![
            Family {
                size: 1024,
                weight: 1024,
            },
            Family {
                size: 4096,
                weight: 4096,
            },
        ],
        templates: TEMPLATES.len(),
        render: Box::new(|family, n, template| {
            let (base, answer) = if family == 0 {
                ("binary", format!("{n:b}"))
            } else {
                ("hexadecimal", format!("{n:x}"))
            };
            let question = fill(
                TEMPLATES[template],
                &[("{n}", &n.to_string()), ("{base}", base)],
            );
            (question, answer)
        }),
    }
}

/// Weekdays (offsets 1..=300) and months (offsets 1..=100), before and after.
///
/// Families: weekday after, weekday before, month after, month before; index = start * offsets
/// + (offset - 1).
fn calendar() -> Spec {
    const DAY_TEMPLATES: [&str; 3] = [
        "What day of the week is {k} {unit} {dir} {start}?",
        "Which day of the week is {k} {unit} {dir} {start}?",
        "What is the day of the week {k} {unit} {dir} {start}?",
    ];
    const MONTH_TEMPLATES: [&str; 3] = [
        "Which month is {k} {unit} {dir} {start}?",
        "What month is {k} {unit} {dir} {start}?",
        "What is the month {k} {unit} {dir} {start}?",
    ];
    let family = |size| Family { size, weight: size };
    Spec {
        families: vec![
            family(7 * 300),
            family(7 * 300),
            family(12 * 100),
            family(12 * 100),
        ],
        templates: 3,
        render: Box::new(|family, index, template| {
            let after = family % 2 == 0;
            let (names, offsets, templates, one, many): (&[&str], u64, _, _, _) = if family < 2 {
                (&WEEKDAYS, 300, &DAY_TEMPLATES, "day", "days")
            } else {
                (&MONTHS, 100, &MONTH_TEMPLATES, "month", "months")
            };
            let cycle = names.len() as u64;
            let (start, k) = (index / offsets, 1 + index % offsets);
            let end = if after {
                (start + k) % cycle
            } else {
                (start + cycle - k % cycle) % cycle
            };
            let question = fill(
                templates[template],
                &[
                    ("{k}", &k.to_string()),
                    ("{unit}", if k == 1 { one } else { many }),
                    ("{dir}", if after { "after" } else { "before" }),
                    ("{start}", names[start as usize]),
                ],
            );
            (question, names[end as usize].to_string())
        }),
    }
}

/// Rearranging 3 or 4 distinct short words; `answer` gives the rearranged words.
fn word_order(
    templates: &'static [&'static str],
    answer: fn(&[&'static str]) -> Vec<&'static str>,
) -> Spec {
    let (families, lengths) = word_families(3..=4);
    Spec {
        families,
        templates: templates.len(),
        render: Box::new(move |family, index, template| {
            let words = short_words(index, lengths[family]);
            let question = fill(templates[template], &[("{w}", &words.join(" "))]);
            (question, answer(&words).join(" "))
        }),
    }
}

/// Sorting 4 or 5 digits (repeats allowed), written with spaces.
fn digit_sorting() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "Write the digits in ascending order: {d}",
        "Give the digits {d} in ascending order.",
        "What are the digits {d} in ascending order?",
    ];
    Spec {
        families: vec![
            Family {
                size: 10_000,
                weight: 1,
            },
            Family {
                size: 100_000,
                weight: 1,
            },
        ],
        templates: TEMPLATES.len(),
        render: Box::new(|family, index, template| {
            let k = 4 + family;
            let mut digits: Vec<u64> = (0..k as u32).map(|j| index / 10u64.pow(j) % 10).collect();
            let show = |digits: &[u64]| {
                digits
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let question = fill(TEMPLATES[template], &[("{d}", &show(&digits))]);
            digits.sort_unstable();
            (question, show(&digits))
        }),
    }
}

/// Counting 2..=9 distinct short words; every count equally common.
fn word_count() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "How many words are in: {w}?",
        "How many words are there in: {w}?",
        "Count the words in: {w}",
    ];
    let (families, lengths) = word_families(2..=9);
    Spec {
        families,
        templates: TEMPLATES.len(),
        render: Box::new(move |family, index, template| {
            let k = lengths[family];
            let words = short_words(index, k);
            let question = fill(TEMPLATES[template], &[("{w}", &words.join(" "))]);
            (question, k.to_string())
        }),
    }
}

/// Repeating 2..=4 distinct short words.
fn copying() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "Repeat after me: {w}",
        "Now repeat after me: {w}",
        "Please repeat after me: {w}",
    ];
    let (families, lengths) = word_families(2..=4);
    Spec {
        families,
        templates: TEMPLATES.len(),
        render: Box::new(move |family, index, template| {
            let words = short_words(index, lengths[family]).join(" ");
            let question = fill(TEMPLATES[template], &[("{w}", &words)]);
            (question, words)
        }),
    }
}

/// The number after or before n, n in 1..=9999.
fn successor() -> Spec {
    const TEMPLATES: [&str; 3] = [
        "What number comes {dir} {n}?",
        "Which number comes {dir} {n}?",
        "What is the number that comes {dir} {n}?",
    ];
    let family = Family {
        size: 9999,
        weight: 9999,
    };
    Spec {
        families: vec![family, family],
        templates: TEMPLATES.len(),
        render: Box::new(|family, index, template| {
            let n = index + 1;
            let (dir, answer) = if family == 0 {
                ("after", n + 1)
            } else {
                ("before", n - 1)
            };
            let question = fill(
                TEMPLATES[template],
                &[("{dir}", dir), ("{n}", &n.to_string())],
            );
            (question, answer.to_string())
        }),
    }
}

/// The phrase shapes of the lexicon domains, each picked equally often.
#[derive(Clone, Copy)]
enum Shape {
    /// "red cat"
    AdjectiveNoun,
    /// "cat runs"
    NounVerb,
    /// "red cat runs"
    AdjectiveNounVerb,
    /// "cat sees dog" (two different nouns)
    NounVerbNoun,
}

const SHAPES: [Shape; 4] = [
    Shape::AdjectiveNoun,
    Shape::NounVerb,
    Shape::AdjectiveNounVerb,
    Shape::NounVerbNoun,
];

impl Shape {
    fn size(self) -> u64 {
        let (n, a, v) = (
            NOUNS.len() as u64,
            ADJECTIVES.len() as u64,
            VERBS.len() as u64,
        );
        match self {
            Shape::AdjectiveNoun => a * n,
            Shape::NounVerb => n * v,
            Shape::AdjectiveNounVerb => a * n * v,
            Shape::NounVerbNoun => n * v * (n - 1),
        }
    }

    fn words(self, index: u64) -> Vec<&'static str> {
        let (n, v) = (NOUNS.len() as u64, VERBS.len() as u64);
        let noun = |i: u64| NOUNS[i as usize];
        let adjective = |i: u64| ADJECTIVES[i as usize];
        let verb = |i: u64| VERBS[i as usize];
        match self {
            Shape::AdjectiveNoun => vec![adjective(index / n), noun(index % n)],
            Shape::NounVerb => vec![noun(index / v), verb(index % v)],
            Shape::AdjectiveNounVerb => vec![
                adjective(index / (n * v)),
                noun(index / v % n),
                verb(index % v),
            ],
            Shape::NounVerbNoun => {
                let first = index / (v * (n - 1));
                let mut second = index % (n - 1);
                if second >= first {
                    second += 1;
                }
                vec![noun(first), verb(index / (n - 1) % v), noun(second)]
            }
        }
    }
}

/// Word-by-word translation of 2-3 word English phrases into a made-up language.
fn lexicon_domain(domain: &str) -> Spec {
    const TEMPLATES: [&str; 3] = [
        "Translate to {lang}: {p}",
        "Translate into {lang}: {p}",
        "Translate {p} into {lang}.",
    ];
    let lexicon = lexicon(domain).expect("a lexicon domain has a lexicon");
    Spec {
        families: SHAPES
            .iter()
            .map(|shape| Family {
                size: shape.size(),
                weight: 1,
            })
            .collect(),
        templates: TEMPLATES.len(),
        render: Box::new(move |family, index, template| {
            let phrase = SHAPES[family].words(index).join(" ");
            let answer = lexicon
                .translate(&phrase)
                .expect("every English word of a phrase is in the lexicon");
            let question = fill(
                TEMPLATES[template],
                &[("{lang}", lexicon.name()), ("{p}", &phrase)],
            );
            (question, answer)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrangements_decode_bijectively() {
        let (n, k) = (6, 3);
        let all: std::collections::HashSet<Vec<usize>> = (0..arrangements(n, k))
            .map(|i| arrangement(i, n, k))
            .collect();
        assert_eq!(all.len() as u64, arrangements(n, k));
        assert!(all
            .iter()
            .all(|seq| seq.len() == k && seq.iter().all(|&x| x < n)));
        assert!(all.iter().all(|seq| {
            let set: std::collections::HashSet<_> = seq.iter().collect();
            set.len() == k
        }));
    }

    #[test]
    fn lexicon_shapes_decode_bijectively() {
        for shape in SHAPES {
            // The 2-word shapes entirely, the 3-word shapes on a stride.
            let step = (shape.size() / 20_000).max(1);
            let mut seen = std::collections::HashSet::new();
            for index in (0..shape.size()).step_by(step as usize) {
                assert!(seen.insert(shape.words(index)), "{index}");
            }
            let last = shape.words(shape.size() - 1);
            assert!(last.len() >= 2);
            if let Shape::NounVerbNoun = shape {
                assert!((0..shape.size())
                    .step_by(997)
                    .all(|i| shape.words(i)[0] != shape.words(i)[2]));
            }
        }
    }
}
