//! The one tokenizer every model of an experiment shares: a byte-level BPE trained with the
//! Hugging Face `tokenizers` library (the GPT-2 scheme), stored as a standard `tokenizer.json`.
//!
//! Byte-level means every UTF-8 string maps to tokens and back without loss and without an
//! unknown token: the 256 byte symbols are always in the vocabulary, merges only add to them.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::{AddedToken, NormalizerWrapper, PostProcessorWrapper, TokenizerBuilder};

use crate::DataError;

/// The special tokens in id order: padding, beginning and end of sequence.
pub const SPECIAL_TOKENS: [&str; 3] = ["<pad>", "<bos>", "<eos>"];
/// Spellings of the end-of-sequence token looked up in a loaded `tokenizer.json`, in order.
pub const EOS_NAMES: [&str; 6] = [
    "<eos>",
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "[SEP]",
];
/// Spellings of the beginning-of-sequence token, in order.
pub const BOS_NAMES: [&str; 4] = ["<bos>", "<s>", "<|begin_of_text|>", "[CLS]"];
/// Spellings of the padding token, in order.
pub const PAD_NAMES: [&str; 3] = ["<pad>", "[PAD]", "<|padding|>"];
/// Id of `<pad>` in every tokenizer this crate trains.
pub const PAD_ID: u32 = 0;
/// Id of `<bos>` in every tokenizer this crate trains.
pub const BOS_ID: u32 = 1;
/// Id of `<eos>` in every tokenizer this crate trains.
pub const EOS_ID: u32 = 2;

/// A byte-level BPE tokenizer with `<pad>`, `<bos>` and `<eos>` special tokens.
///
/// Tokenizers trained here have the special tokens at the fixed ids [`PAD_ID`], [`BOS_ID`] and
/// [`EOS_ID`]; a `tokenizer.json` loaded from elsewhere keeps its own ids, found by token text.
/// A literal `<pad>`, `<bos>` or `<eos>` inside a text is encoded as that special token (the
/// library matches special tokens before anything else); the shipped data contains none.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Cached: the library rebuilds its whole vocabulary map to answer this.
    vocab_size: usize,
    pad: u32,
    bos: u32,
    eos: u32,
    /// A stable hash of the `tokenizer.json` text: equal for identical tokenizers.
    fingerprint: String,
}

/// The GPT-2 byte-level settings: no prefix space, because a prefix space would make
/// `decode(encode(text))` differ from `text`; the GPT-2 split regex, so merges never cross word
/// boundaries.
fn byte_level() -> ByteLevel {
    ByteLevel::new(false, true, true)
}

fn library_error(
    context: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DataError {
    let context = context.into();
    move |cause| DataError::Tokenizer { context, cause }
}

/// The byte-level alphabet read back: each of the 256 symbols to its byte.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    // GPT-2's table: printable bytes stand for themselves, the rest shift to 256 and up.
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut map = std::collections::HashMap::new();
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable.contains(&b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("below the surrogates")
        };
        map.insert(c, b);
    }
    map
}

/// The byte of a SentencePiece byte-fallback token `<0xNN>`.
fn byte_fallback(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// 64-bit FNV-1a of `bytes` as 16 hex digits.
fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Tokenizer {
    /// Trains a tokenizer of at most `vocab_size` entries (special tokens and the 256 byte
    /// symbols included) on `texts`.
    ///
    /// The result depends only on the texts and `vocab_size`: the library picks each merge by
    /// count with ties broken by token ids, and its parallel counting only sums. It can end up
    /// smaller than `vocab_size` when the texts offer no more pairs to merge.
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Self, DataError>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send,
        S: AsRef<str> + Send,
    {
        let mut trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|token| AddedToken::from(*token, true))
                    .collect(),
            )
            // Every byte gets a symbol even if the training texts never use it, so any text
            // can be encoded later.
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tokenizer = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevel,
        >::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(byte_level()))
        .with_post_processor(None)
        .with_decoder(Some(byte_level()))
        .build()
        .map_err(library_error("building the BPE tokenizer"))?;
        tokenizer
            .train(&mut trainer, texts.into_iter())
            .map_err(library_error("training the BPE tokenizer"))?;
        let trained = Tokenizer::from_library(tokenizer.into(), Path::new("<trained>"))?;
        // The trainer adds special tokens first, in order; the protocol relies on that.
        debug_assert_eq!(
            (trained.pad, trained.bos, trained.eos),
            (PAD_ID, BOS_ID, EOS_ID)
        );
        Ok(trained)
    }

    /// Wraps a library tokenizer, finding the special tokens by text; `origin` names it in errors.
    ///
    /// This crate's names come first; a foreign `tokenizer.json` (a Hugging Face model's) may
    /// use the other common spellings in [`EOS_NAMES`], [`BOS_NAMES`] and [`PAD_NAMES`]. Only an
    /// end-of-sequence token is required: without a beginning or padding token of its own, a
    /// tokenizer uses its end-of-sequence token for them, as GPT-2's does.
    fn from_library(mut inner: tokenizers::Tokenizer, origin: &Path) -> Result<Self, DataError> {
        // [`encode`](Self::encode) gives a text's own ids: a foreign file's padding (a fixed
        // length of 2^60 pads every encoding to that) or truncation (a stride past its length
        // fails every encoding) is not applied; callers pad and cut themselves.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(library_error(format!("loading {}", origin.display())))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let eos = find(&EOS_NAMES).ok_or_else(|| DataError::MissingSpecialToken {
            path: origin.to_path_buf(),
            token: EOS_NAMES.join(" or "),
        })?;
        // One past the largest id rather than the entry count: a foreign file may leave gaps,
        // and models size their embedding tables by this.
        let vocab_size = inner
            .get_vocab(true)
            .into_values()
            .max()
            .map_or(0, |id| id as usize + 1);
        // The library can panic serialising a malformed foreign file (ids past its own limits):
        // that is this file's error.
        let json =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.to_string(false)))
                .map_err(|_| "the tokenizers library panicked writing it back".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|why| {
                    library_error(format!("loading {}", origin.display()))(why.into())
                })?;
        Ok(Tokenizer {
            vocab_size,
            fingerprint: fnv_hex(json.as_bytes()),
            pad: find(&PAD_NAMES).unwrap_or(eos),
            bos: find(&BOS_NAMES).unwrap_or(eos),
            eos,
            inner,
        })
    }

    /// Loads any `tokenizer.json` (this crate's or another's) that has `<pad>`, `<bos>` and
    /// `<eos>` tokens.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        if !path.is_file() {
            return Err(DataError::Io {
                action: "read",
                path: path.to_path_buf(),
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|cause| DataError::Io {
            action: "read",
            path: path.to_path_buf(),
            cause,
        })?;
        Tokenizer::from_json_text(&text, path)
    }

    /// A tokenizer from the text of a `tokenizer.json` (made elsewhere, e.g. from a GGUF file's
    /// metadata); `origin` names it in errors.
    pub fn from_json_text(text: &str, origin: &Path) -> Result<Self, DataError> {
        let context = format!("loading {}", origin.display());
        // The library panics on a syntax error inside some parts of the file (its decoder's)
        // and on some malformed parts of valid JSON (a `Precompiled` normalizer's charsmap):
        // the syntax is checked first, and any other panic is this file's error too.
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| library_error(context.clone())(e.into()))?;
        let inner = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                library_error(context.clone())(
                    format!("the tokenizers library panicked: {why}").into(),
                )
            })?
            .map_err(library_error(context))?;
        Tokenizer::from_library(inner, origin)
    }

    /// The same tokenizer with the special ids a model file states (a GGUF file's
    /// `tokenizer.ggml.*_token_id`) instead of the ones found by spelling; `None` keeps one.
    /// `origin` names the file in errors: an id outside the vocabulary is refused.
    pub fn with_special_ids(
        mut self,
        pad: Option<u32>,
        bos: Option<u32>,
        eos: Option<u32>,
        origin: &Path,
    ) -> Result<Self, DataError> {
        for (which, id) in [("padding", pad), ("beginning", bos), ("end", eos)] {
            if let Some(id) = id.filter(|&id| id as usize >= self.vocab_size) {
                return Err(library_error(format!("loading {}", origin.display()))(
                    format!(
                        "the {which}-of-sequence id {id} is outside the vocabulary of {} tokens",
                        self.vocab_size
                    )
                    .into(),
                ));
            }
        }
        self.eos = eos.unwrap_or(self.eos);
        self.bos = bos.unwrap_or(self.bos);
        self.pad = pad.unwrap_or(self.pad);
        let ids = format!(
            "{}|{}|{}|{}",
            self.fingerprint, self.pad, self.bos, self.eos
        );
        self.fingerprint = fnv_hex(ids.as_bytes());
        Ok(self)
    }

    /// Writes the tokenizer as a (pretty-printed) `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        std::fs::write(path, self.to_json()).map_err(|cause| DataError::Io {
            action: "write",
            path: path.to_path_buf(),
            cause,
        })
    }

    /// The `tokenizer.json` text; identical for identically trained tokenizers.
    pub fn to_json(&self) -> String {
        self.inner
            .to_string(true)
            .expect("a tokenizer built from serializable parts always serializes")
    }

    /// Token ids of `text`, without any special token added.
    ///
    /// # Panics
    /// If the library fails, which a byte-level BPE cannot do on a Rust string; a foreign
    /// `tokenizer.json` with an incomplete alphabet could.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.inner.encode(text, false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            Err(error) => panic!("tokenizer failed to encode {text:?}: {error}"),
        }
    }

    /// The text of `ids`, with `<pad>`, `<bos>`, `<eos>` and any other special token skipped.
    /// Ids outside the vocabulary are skipped too.
    ///
    /// # Panics
    /// If the library's decoder fails, which the byte-level decoder does not.
    pub fn decode(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id != self.pad && id != self.bos && id != self.eos)
            .collect();
        match self.inner.decode(&kept, true) {
            Ok(text) => text,
            Err(error) => panic!("tokenizer failed to decode {kept:?}: {error}"),
        }
    }

    /// One past the largest token id, special tokens included: the embedding table size. For
    /// tokenizers trained here it is also the number of entries.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// A stable 64-bit hash of the tokenizer's `tokenizer.json` (16 hex digits): two tokenizers
    /// with the same fingerprint split every text the same way.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The text bytes each token id stands for (index = id; one past the largest id long), the
    /// "surface" the alignment of two vocabularies compares: a byte-level token's bytes
    /// (`Ġthe` is ` the`), a SentencePiece token's text with `▁` read as a space, a byte-fallback
    /// token `<0x0A>` as its byte, a WordPiece continuation `##ing` as `ing`. Special tokens
    /// (padding, beginning and end of sequence, and any other added special token) and unused
    /// ids have an empty surface.
    pub fn surfaces(&self) -> Vec<Vec<u8>> {
        let byte_level = self.is_byte_level();
        let decode_byte = byte_decoder();
        let mut out = vec![Vec::new(); self.vocab_size];
        let specials: std::collections::HashSet<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .chain([self.pad, self.bos, self.eos])
            .collect();
        for (token, id) in self.inner.get_vocab(true) {
            let slot = id as usize;
            if slot >= out.len() || specials.contains(&id) {
                continue;
            }
            out[slot] = if byte_level {
                token
                    .chars()
                    .map(|c| decode_byte.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| token.clone().into_bytes())
            } else if let Some(byte) = byte_fallback(&token) {
                vec![byte]
            } else if let Some(rest) = token.strip_prefix("##") {
                rest.as_bytes().to_vec()
            } else {
                token.replace('\u{2581}', " ").into_bytes()
            };
        }
        out
    }

    /// Whether the tokenizer's decoder is byte-level (GPT-2's scheme), alone or in a sequence.
    fn is_byte_level(&self) -> bool {
        let json: serde_json::Value =
            serde_json::from_str(&self.inner.to_string(false).unwrap_or_default())
                .unwrap_or_default();
        fn has(v: &serde_json::Value) -> bool {
            v.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
                || v.get("decoders")
                    .and_then(|d| d.as_array())
                    .is_some_and(|d| d.iter().any(has))
        }
        has(&json["decoder"])
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Id of the beginning-of-sequence token.
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// Id of the end-of-sequence token, which closes every training answer.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_surfaces_spell_the_text_and_specials_are_empty() {
        let texts = [
            "Question: what is the capital of France? Answer: Paris",
            "Ünïcode ok",
        ];
        let t = Tokenizer::train(texts, 300).unwrap();
        let surfaces = t.surfaces();
        assert_eq!(surfaces.len(), t.vocab_size());
        for id in [t.pad_id(), t.bos_id(), t.eos_id()] {
            assert!(surfaces[id as usize].is_empty());
        }
        for text in [" Paris is big", "Ünïcode, ok?\n"] {
            let spelled: Vec<u8> = t
                .encode(text)
                .iter()
                .flat_map(|&id| surfaces[id as usize].clone())
                .collect();
            assert_eq!(spelled, text.as_bytes());
        }
        // Same training, same fingerprint; another size, another.
        let again = Tokenizer::train(texts, 300).unwrap();
        assert_eq!(t.fingerprint(), again.fingerprint());
        assert_ne!(
            t.fingerprint(),
            Tokenizer::train(texts, 280).unwrap().fingerprint()
        );
    }

    #[test]
    fn special_ids_a_file_states_replace_the_spelled_ones() {
        let t = Tokenizer::train(["a few words for a tiny vocabulary"], 270).unwrap();
        let before = t.fingerprint().to_string();
        let origin = Path::new("model.gguf");
        let t = t.with_special_ids(None, Some(5), Some(7), origin).unwrap();
        assert_eq!((t.pad_id(), t.bos_id(), t.eos_id()), (PAD_ID, 5, 7));
        // Another end of sequence is another tokenizer for the alignment.
        assert_ne!(t.fingerprint(), before);
        let err = t
            .with_special_ids(None, None, Some(9999), origin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.gguf") && err.contains("9999"), "{err}");
    }

    #[test]
    fn sentencepiece_and_byte_fallback_surfaces() {
        assert_eq!(byte_fallback("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_fallback("<0xZZ>"), None);
        assert_eq!(byte_fallback("<0x0A0>"), None);
        assert_eq!(byte_decoder()[&'\u{120}'], b' ');
        assert_eq!(byte_decoder()[&'a'], b'a');
        assert_eq!(byte_decoder().len(), 256);
    }
}
