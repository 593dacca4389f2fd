//! SQuAD v1.1 answer normalisation and exact match.
//!
//! The reference is `normalize_answer` in `evaluate-v1.1.py`:
//!
//! ```python
//! def normalize_answer(s):
//!     def remove_articles(text):
//!         return re.sub(r'\b(a|an|the)\b', ' ', text)
//!     def white_space_fix(text):
//!         return ' '.join(text.split())
//!     def remove_punc(text):
//!         exclude = set(string.punctuation)
//!         return ''.join(ch for ch in text if ch not in exclude)
//!     def lower(text):
//!         return text.lower()
//!     return white_space_fix(remove_articles(remove_punc(lower(s))))
//! ```
//!
//! Python's notions of "word character" and "whitespace" differ from Rust's, so both are
//! spelled out here rather than borrowed from `char`.

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Normalises an answer exactly as the SQuAD v1.1 evaluation script does.
///
/// In order: Unicode lower-casing (full case mapping, so `"İ"` becomes `"i\u{307}"`);
/// removal of the 32 ASCII punctuation characters of Python's `string.punctuation` (other
/// punctuation such as `’` or `—` stays); replacement of the whole words `a`, `an`, `the`
/// by a space, with Python's Unicode word boundaries; then splitting on Python's
/// whitespace and joining with single spaces.
pub fn normalize_answer(text: &str) -> String {
    // `char::is_ascii_punctuation` is exactly the set of `string.punctuation`.
    let kept: Vec<char> = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let without_articles = remove_articles(&kept);
    let words: Vec<&str> = split_python_whitespace(&without_articles).collect();
    words.join(" ")
}

/// SQuAD exact match: true when both answers normalise to the same string
/// (see [`normalize_answer`]); averaged, true counts as 1 and false as 0.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(reference)
}

/// Raw exact match: true when the answers are equal after trimming surrounding whitespace
/// only, as Python's `prediction.strip() == reference.strip()` (same whitespace set as
/// [`normalize_answer`]); case, punctuation and articles all count.
pub fn exact_match_raw(prediction: &str, reference: &str) -> bool {
    prediction.trim_matches(is_python_whitespace) == reference.trim_matches(is_python_whitespace)
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: scans left to right, and at each position
/// takes the first alternative that is bounded by word boundaries on both sides.
fn remove_articles(chars: &[char]) -> String {
    const ARTICLES: [&[char]; 3] = [&['a'], &['a', 'n'], &['t', 'h', 'e']];
    let mut out = String::with_capacity(chars.len());
    let mut at = 0;
    while at < chars.len() {
        let article = if is_word_boundary(chars, at) {
            ARTICLES.iter().find(|article| {
                chars[at..].starts_with(article) && is_word_boundary(chars, at + article.len())
            })
        } else {
            None
        };
        match article {
            Some(article) => {
                out.push(' ');
                at += article.len();
            }
            None => {
                out.push(chars[at]);
                at += 1;
            }
        }
    }
    out
}

/// Python's `\b` for str patterns: a word character on exactly one side of `at`.
fn is_word_boundary(chars: &[char], at: usize) -> bool {
    let before = at
        .checked_sub(1)
        .and_then(|i| chars.get(i))
        .is_some_and(|&c| is_python_word(c));
    let after = chars.get(at).is_some_and(|&c| is_python_word(c));
    before != after
}

/// Python's `\w` for str patterns: `str.isalnum()` or `_`. `isalnum` is exactly the
/// general categories L* and Nd/Nl/No; unlike Rust's `char::is_alphanumeric` it excludes
/// combining marks (U+0301, Devanagari vowel signs) and symbols such as `Ⓐ`.
fn is_python_word(c: char) -> bool {
    c == '_'
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
        )
}

/// Python's `str.isspace()`: Rust's `char::is_whitespace` plus the information separators
/// U+001C..=U+001F, which Python counts as whitespace (bidirectional class B or S).
pub(crate) fn is_python_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Python's `text.split()` with no argument.
fn split_python_whitespace(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_whitespace)
        .filter(|word| !word.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_articles_only_as_whole_words() {
        assert_eq!(normalize_answer("The Eiffel Tower"), "eiffel tower");
        assert_eq!(
            normalize_answer("theory another atheist"),
            "theory another atheist"
        );
        assert_eq!(normalize_answer("a an the"), "");
        // Punctuation goes first, so "a-team" is one word.
        assert_eq!(normalize_answer("a-team"), "ateam");
    }

    #[test]
    fn word_boundaries_are_python_unicode_boundaries() {
        // CJK letters are word characters: no boundary between "the" and "東".
        assert_eq!(normalize_answer("the東京"), "the東京");
        // A combining mark is not a word character in Python, so "the" is a whole word.
        assert_eq!(normalize_answer("the\u{301}ory"), "\u{301}ory");
        // Emoji are not word characters either.
        assert_eq!(normalize_answer("👍the👍"), "👍 👍");
    }

    #[test]
    fn whitespace_is_python_whitespace() {
        assert_eq!(normalize_answer("New\u{A0}York"), "new york");
        assert_eq!(normalize_answer("the\u{1C}cat"), "cat");
        // Zero-width space and Mongolian vowel separator are not whitespace.
        assert_eq!(normalize_answer("pa\u{200B}ris"), "pa\u{200B}ris");
        assert_eq!(normalize_answer("new\u{180E}york"), "new\u{180E}york");
    }

    #[test]
    fn exact_match_variants() {
        assert!(exact_match("The Paris.", "paris"));
        assert!(!exact_match_raw("The Paris.", "paris"));
        assert!(exact_match_raw("\u{1C} Paris\n", "Paris"));
        assert!(!exact_match_raw("paris", "Paris"));
        assert!(exact_match("", "the"));
    }
}
