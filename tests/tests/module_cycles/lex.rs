//! The tokens of Rust source, as far as module paths need them.

use std::fmt::Write as _;

/// A token of Rust source, as far as module paths need: comments are dropped, and literals and
/// lifetimes carry nothing a path could be made of (except strings, for `#[path = "..."]`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Open(char),
    Close(char),
    Punct(char),
    /// A string literal's text, escapes left as written.
    Str(String),
    /// A number, character, byte or lifetime.
    Other,
}

/// A token and the line it starts on.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
}

/// What a read past the end of a token list sees.
pub(super) static END: Tok = Tok::Other;

/// The token at `k`, or [`END`].
pub(super) fn tok(toks: &[Token], k: usize) -> &Tok {
    toks.get(k).map_or(&END, |t| &t.tok)
}

pub(super) fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

pub(super) fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `text` into tokens.
pub(super) fn lex(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let start_line = line;
        let ch = c[i];
        let tok = if ch == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if ch.is_whitespace() {
            i += 1;
            continue;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
            continue;
        } else if ch == '"' {
            let (end, text) = string(&c, i + 1, &mut line);
            i = end;
            Tok::Str(text)
        } else if ch == '\'' {
            if at(i + 1) == '\\' || at(i + 2) == '\'' {
                i = char_literal(&c, i);
            } else {
                // A lifetime or a loop label.
                i += 1;
                while is_ident_char(at(i)) {
                    i += 1;
                }
            }
            Tok::Other
        } else if ch.is_ascii_digit() {
            while is_ident_char(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
            Tok::Other
        } else if is_ident_start(ch) {
            let start = i;
            while is_ident_char(at(i)) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = (i..).take_while(|&k| at(k) == '#').count();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", '"' | '#') if at(i + hashes) == '"' => {
                    let (end, text) = raw_string(&c, i + hashes + 1, hashes, &mut line);
                    i = end;
                    Tok::Str(text)
                }
                ("r", '#') if is_ident_start(at(i + 1)) => {
                    // A raw identifier: `r#type`.
                    let start = i + 1;
                    i += 1;
                    while is_ident_char(at(i)) {
                        i += 1;
                    }
                    Tok::Ident(c[start..i].iter().collect())
                }
                ("b" | "c", '"') => {
                    let (end, text) = string(&c, i + 1, &mut line);
                    i = end;
                    Tok::Str(text)
                }
                ("b", '\'') => {
                    i = char_literal(&c, i);
                    Tok::Other
                }
                _ => Tok::Ident(word),
            }
        } else if ch == ':' && at(i + 1) == ':' {
            i += 2;
            Tok::PathSep
        } else {
            i += 1;
            match ch {
                '(' | '[' | '{' => Tok::Open(ch),
                ')' | ']' | '}' => Tok::Close(ch),
                _ => Tok::Punct(ch),
            }
        };
        out.push(Token {
            tok,
            line: start_line,
        });
    }
    out
}

/// The end of a string whose text starts at `i`, and its text.
pub(super) fn string(c: &[char], mut i: usize, line: &mut usize) -> (usize, String) {
    let start = i;
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        if c.get(i) == Some(&'\n') {
            *line += 1;
        }
        i += 1;
    }
    let text = c[start..i.min(c.len())].iter().collect();
    (i + 1, text)
}

/// The end of a raw string whose text starts at `i` and closes with `"` and `hashes` `#`s.
pub(super) fn raw_string(
    c: &[char],
    mut i: usize,
    hashes: usize,
    line: &mut usize,
) -> (usize, String) {
    let start = i;
    while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#'))) {
        *line += usize::from(c[i] == '\n');
        i += 1;
    }
    let text = c[start..i.min(c.len())].iter().collect();
    (i + 1 + hashes, text)
}

/// The end of the character literal whose opening quote is at `i` (or a `b` before it).
pub(super) fn char_literal(c: &[char], mut i: usize) -> usize {
    if c[i] == 'b' {
        i += 1;
    }
    // Past the quote and the first character, which may be an escaped quote.
    i += 1;
    if c.get(i) == Some(&'\\') {
        i += 1;
    }
    i += 1;
    while i < c.len() && c[i] != '\'' {
        i += 1;
    }
    i + 1
}

/// The index of the token that closes the group opened at `open`.
pub(super) fn close_of(toks: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// An attribute's tokens written without spaces: `cfg(test)`, `path="x.rs"`.
pub(super) fn attribute_text(toks: &[Token]) -> String {
    let mut s = String::new();
    for t in toks {
        match &t.tok {
            Tok::Ident(w) => {
                if s.ends_with(is_ident_char) {
                    s.push(' ');
                }
                s.push_str(w);
            }
            Tok::PathSep => s.push_str("::"),
            Tok::Open(ch) | Tok::Close(ch) | Tok::Punct(ch) => s.push(*ch),
            Tok::Str(text) => {
                let _ = write!(s, "\"{text}\"");
            }
            Tok::Other => s.push('?'),
        }
    }
    s
}

/// Whether an attribute keeps its item out of every build but the tests'.
pub(super) fn is_cfg_test(attribute: &str) -> bool {
    attribute == "cfg(test)" || attribute.starts_with("cfg(all(test,")
}
