//! The made-up languages of the lexicon domains.
//!
//! Each language maps the same 150 English words ([`crate::words::lexicon_english`]) to its own
//! made-up words of two or three consonant-vowel syllables, drawn from its own sounds. A
//! language is drawn from a fixed seed and the domain name only, never from the seed given to
//! [`crate::generate`]: the language is fixed, and only which phrases are asked changes with the
//! seed. A model that has learnt a language can translate phrases it has never seen.

use std::collections::{HashMap, HashSet};

use cotune_data::SeededRng;

use crate::words::{lexicon_english, SHORT_WORDS};
use crate::FUNCTION_WORDS;

/// The seed every language is drawn from (with the domain name as the stream).
const LEXICON_SEED: u64 = 0;

/// One made-up language: its domain, its display name, its sounds.
struct Language {
    domain: &'static str,
    name: &'static str,
    consonants: &'static str,
    vowels: &'static str,
}

const LANGUAGES: [Language; 4] = [
    Language {
        domain: "lexicon_a",
        name: "Lexa",
        consonants: "kmtlrs",
        vowels: "aiou",
    },
    Language {
        domain: "lexicon_b",
        name: "Vorin",
        consonants: "bdgvzn",
        vowels: "aeo",
    },
    Language {
        domain: "lexicon_c",
        name: "Tazuni",
        consonants: "tzhnfp",
        vowels: "aeiu",
    },
    Language {
        domain: "lexicon_d",
        name: "Melu",
        consonants: "plmwyd",
        vowels: "aeiu",
    },
];

/// The lexicon domains' names.
pub(crate) const LEXICON_DOMAINS: [&str; 4] = ["lexicon_a", "lexicon_b", "lexicon_c", "lexicon_d"];

/// A made-up language's word list: one made-up word for each English word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexicon {
    name: &'static str,
    entries: Vec<(&'static str, String)>,
    index: HashMap<&'static str, usize>,
}

impl Lexicon {
    /// The language's display name, as the questions write it ("Lexa").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every (English word, made-up word) pair, in the shared English list's order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.entries
            .iter()
            .map(|(english, word)| (*english, word.as_str()))
    }

    /// The made-up word for one English word, if the language has one.
    pub fn word(&self, english: &str) -> Option<&str> {
        self.index
            .get(english)
            .map(|&at| self.entries[at].1.as_str())
    }

    /// Word-by-word translation of space-separated English words; `None` if one is unknown.
    pub fn translate(&self, phrase: &str) -> Option<String> {
        let words: Option<Vec<&str>> = phrase.split_whitespace().map(|w| self.word(w)).collect();
        Some(words?.join(" "))
    }
}

/// The lexicon of a lexicon domain (`lexicon_a` ... `lexicon_d`); `None` for any other name.
///
/// The same on every call and platform: it depends on the domain name only.
pub fn lexicon(domain: &str) -> Option<Lexicon> {
    let language = LANGUAGES.iter().find(|l| l.domain == domain)?;
    let mut rng = SeededRng::for_stream(LEXICON_SEED, &format!("cotune-skills/lexicon/{domain}"));
    let consonants: Vec<char> = language.consonants.chars().collect();
    let vowels: Vec<char> = language.vowels.chars().collect();
    // A made-up word must not read as an English word of any list, a template word or a
    // language's name: the answers would be ambiguous to read.
    let mut taken: HashSet<String> = lexicon_english()
        .chain(SHORT_WORDS)
        .chain(FUNCTION_WORDS.iter().copied())
        .map(str::to_string)
        .chain(LANGUAGES.iter().map(|l| l.name.to_lowercase()))
        .collect();
    let mut entries = Vec::new();
    for english in lexicon_english() {
        let word = loop {
            let syllables = 2 + rng.below(2);
            let mut word = String::new();
            for _ in 0..syllables {
                word.push(consonants[rng.below(consonants.len())]);
                word.push(vowels[rng.below(vowels.len())]);
            }
            if taken.insert(word.clone()) {
                break word;
            }
        };
        entries.push((english, word));
    }
    let index = entries
        .iter()
        .enumerate()
        .map(|(at, (english, _))| (*english, at))
        .collect();
    Some(Lexicon {
        name: language.name,
        entries,
        index,
    })
}
