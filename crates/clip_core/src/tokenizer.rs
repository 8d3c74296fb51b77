//! open_clip-exact CLIP tokenizer.
//!
//! A re-implementation of open_clip 3.3.0's `SimpleTokenizer` with `clean='lower'` (the tokenizer of
//! `open_clip.get_tokenizer('ViT-B-32')` and of every OpenAI-vocabulary CLIP model), reading its
//! vocabulary and merges from a Hugging Face style `tokenizer.json` (written by
//! `tools/tokenizer_json.py`). [`ClipTokenizer::encode`] returns exactly the ids that
//! `tokenizer([text])[0]` holds before its zero padding: `[sot] + bpe ids + [eot]`, truncated to the
//! context length with the last id replaced by `eot`.
//!
//! # What is reproduced
//!
//! open_clip cleans text with `whitespace_clean(basic_clean(text)).lower()`, where
//! `basic_clean(t) = html.unescape(html.unescape(ftfy.fix_text(t))).strip()`. This module
//! reproduces, step by step:
//!
//! * `ftfy.fix_text` (ftfy 6.3.1, default configuration): the text is cut into segments after every
//!   `'\n'` (and every 1,000,000 code points); `unescape_html="auto"` is switched off for the rest of
//!   the text once a segment contains `'<'`; each segment goes through ftfy's loop until a fixed
//!   point: `unescape_html` (ftfy's own entity table, including upper-cased names like `&EACUTE;`,
//!   and its `&#...;` rule), `fix_c1_controls` (sloppy windows-1252), `fix_latin_ligatures`,
//!   `fix_character_width`, `uncurl_quotes`, `fix_line_breaks`, `remove_terminal_escapes`,
//!   `remove_control_chars`, and NFC normalisation.
//! * Python's `html.unescape`, twice: the full HTML5 entity table, semicolon-less legacy names with
//!   the longest-prefix rule, numeric references with `_invalid_charrefs`, surrogates and
//!   out-of-range values (U+FFFD) and `_invalid_codepoints` (removed).
//! * `str.strip`, `" ".join(str.split())` (Python's `isspace`) and `str.lower` (full lowercase
//!   mappings and the final-sigma rule).
//! * The `regex` module pattern
//!   `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` with
//!   IGNORECASE (so `'ſ` matches `'s`, and U+0345 matches no alternative at all and is dropped),
//!   the byte-to-unicode map, and BPE with the `</w>` end-of-word suffix, including open_clip's
//!   pre-seeded cache that turns a matched special token string into its id.
//!
//! The Unicode data that decides results (lowercase mappings, the case classes of the final-sigma
//! rule, the regex classes, `isspace`, `re`'s `\d`, and which code points NFC must treat as
//! unassigned) is generated from the reference Python by `tools/gen_html_entities.py` into
//! `tokenizer/tables.rs` (Python 3.11 / Unicode 14.0, `regex` 2026.11.19), so results do not depend
//! on the Unicode version of Rust's standard library or of the `regex` crate. NFC itself uses the
//! `unicode-normalization` crate, applied around code points unassigned in Python's Unicode version
//! (which Python's NFC leaves inert).
//!
//! # Verification
//!
//! Besides the fixture cases (`tests/fixtures/tokenizer_cases.json`, from
//! `tools/make_tokenizer_cases.py`), the ignored test `tokenizer_dump_for_differential_testing`
//! dumps ids and cleaned text for any list of strings, for comparison with open_clip: every code
//! point alone, every code point inside a context template (letters, `'s`, sigmas, digits), and
//! 300,000 random strings of entities, controls, escapes, quotes and many scripts gave identical
//! results (with ftfy's `fix_encoding` disabled on the Python side, see below).
//!
//! # Deliberate differences
//!
//! * **Mojibake repair is not implemented.** ftfy's `fix_encoding` step (with its subordinate
//!   `restore_byte_a0`, `replace_lossy_sequences` and `decode_inconsistent_utf8`), which guesses
//!   that text such as `"sÃ³"` is UTF-8 decoded as Latin-1 and re-decodes it, is left out. Text that
//!   ftfy would consider mojibake is tokenized as it stands (after the other fixes). This is the one
//!   main intended behavioural gap.
//! * Python's `int()` refuses decimal strings of more than 4300 digits, so `html.unescape` raises
//!   (and open_clip fails) on a numeric character reference with that many digits; here such a
//!   reference decodes like any other out-of-range one, to U+FFFD.
//! * Only the first [`MAX_TEXT_BYTES`] (1 MiB) of a text are read; open_clip reads everything.
//!   The ids differ only for a text whose first MiB holds fewer than 75 tokens (a MiB of
//!   whitespace or control characters before the words) or a single word longer than a MiB, whose
//!   BPE could then differ at its cut, hundreds of tokens past the context.
//! * ftfy's fix loop stops after [`MAX_FIX_ROUNDS`] rounds on one word; ftfy goes on until nothing
//!   changes. Only text built so that each fix makes work for another, over and over, differs.
//! * If a `tokenizer.json` yields a BPE piece that is not in its vocabulary (impossible with the
//!   CLIP vocabulary), open_clip would raise `KeyError`; here the piece is skipped.
//!
//! # Performance
//!
//! The text is cleaned and tokenized piece by piece (pieces end at `' '` or `'\n'`, where none of
//! the steps can look across), and work stops as soon as enough ids exist to fill the context, so
//! long inputs cost little more than their first words. BPE uses a priority queue, so even a single
//! megabyte-long word is handled in `O(n log n)`. HTML entities nested `n` times inside one word
//! (`&amp;amp;amp;...`), which ftfy decodes in `n` passes over the word, are decoded in one linear
//! pass with the same result, and ftfy's fix loop is bounded (see [`MAX_FIX_ROUNDS`]), so cleaning
//! costs time linear in the text.

mod json;
mod tables;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustc_hash::FxHashMap;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::interrupt;
use crate::manifest::TextClean;

/// open_clip's default context length.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;
/// open_clip's start-of-text token.
pub const SOT_TOKEN: &str = "<start_of_text>";
/// Hugging Face's names of the start and end tokens, in its CLIP tokenizer.json (Immich's exports carry it).
const HF_SOT_TOKEN: &str = "<|startoftext|>";
const HF_EOT_TOKEN: &str = "<|endoftext|>";
/// open_clip's end-of-text token.
pub const EOT_TOKEN: &str = "<end_of_text>";
/// The BPE end-of-word suffix of the CLIP vocabulary.
pub const END_OF_WORD_SUFFIX: &str = "</w>";

/// Rounds of ftfy's fix loop run on one piece of text. Each round costs time linear in the piece, so
/// the bound keeps the cleaning linear; ftfy itself loops until nothing changes. Nested entities take
/// one round however deep (see [`ftfy_unescape_html`]); more rounds are needed only where a fix makes
/// something another fix changes (`&#65286;amp;`: the reference gives a full-width `＆`, which
/// `fix_character_width` makes `&`, which forms `&amp;`), and only text built for it needs more than
/// a handful.
const MAX_FIX_ROUNDS: usize = 16;
/// The bytes of a text the tokenizer reads: time and memory stay bounded whatever the input (a text
/// can be 1 GB; a single word of 10 MB took 5 s and 400 MB in BPE). The context is full long before.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// ftfy's `max_decode_length`.
const MAX_DECODE_LENGTH: usize = 1_000_000;
/// Symbol id for a symbol that is neither in the vocabulary nor in any merge.
const NO_SYM: u32 = u32::MAX;
/// BPE merges between two runs of the interrupt check: a few hundred microseconds of work.
const MERGES_PER_CHECK: usize = 1 << 14;

/// Errors while loading a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer file could not be read.
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not valid JSON.
    #[error("tokenizer.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON does not have the expected structure.
    #[error("tokenizer.json: {0}")]
    Format(String),
    /// A special token (start or end of text) is in neither the vocabulary nor the added tokens.
    #[error("tokenizer.json: special token {0} is missing")]
    MissingSpecialToken(String),
    /// The context length must be at least 1.
    #[error("invalid context length {0}: it must be at least 1")]
    InvalidContextLength(usize),
}

/// A special token as open_clip matches it in the text (a literal under IGNORECASE).
#[derive(Debug, Clone)]
struct SpecialToken {
    chars: Vec<char>,
}

/// open_clip's CLIP tokenizer. Immutable and `Send + Sync`; it keeps no cache.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    context_length: usize,
    sot_id: i64,
    eot_id: i64,
    /// Special tokens in the order of open_clip's regex alternation.
    specials: Vec<SpecialToken>,
    /// open_clip's pre-seeded BPE cache: special token string -> id.
    cache_ids: HashMap<String, i64>,
    /// Character counts of the keys of `cache_ids` (a token can only hit the cache with one of these byte lengths).
    cache_key_lens: Vec<usize>,
    /// Symbol of each byte inside a word, and at the end of a word (with `</w>`).
    byte_sym: [u32; 256],
    byte_sym_eow: [u32; 256],
    /// Vocabulary id of each symbol (-1 when the symbol is not in the vocabulary).
    sym_ids: Vec<i64>,
    /// `pair_key(left, right)` -> (rank, merged symbol).
    merges: PairMap,
}

impl ClipTokenizer {
    /// Reads a Hugging Face style tokenizer.json (fields `model.vocab`: `{token: id}`, `model.merges`:
    /// `["a b", ...]` or `[["a", "b"], ...]`, optional `model.end_of_word_suffix` (default `</w>`) and
    /// `added_tokens`). The start and end tokens are `<start_of_text>` / `<end_of_text>` (open_clip's
    /// names; Hugging Face's `<|startoftext|>` / `<|endoftext|>` are accepted instead), looked up in
    /// the vocabulary or the added tokens, and matched in the text by open_clip's names only; further
    /// added tokens marked `special` are matched like open_clip's `additional_special_tokens`.
    pub fn from_json_bytes(bytes: &[u8], context_length: usize) -> Result<Self, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::InvalidContextLength(context_length));
        }
        let parsed: json::TokenizerJson = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            // Valid JSON of another shape: a missing field, a string where a number belongs...
            serde_json::error::Category::Data => TokenizerError::Format(e.to_string()),
            _ => TokenizerError::Json(e),
        })?;
        let model = parsed.model;
        if let Some(json::JsonStr(t)) = &model.kind {
            if t != "BPE" {
                return Err(TokenizerError::Format(format!("model.type is {t:?}, expected \"BPE\"")));
            }
        }
        let suffix = model.end_of_word_suffix.map_or(Cow::Borrowed(END_OF_WORD_SUFFIX), |s| s.0);
        let vocab = model.vocab;

        // Every string of the vocabulary and the merges gets a symbol number; `sym_ids` maps it to its id.
        let mut interner = Interner::with_capacity(vocab.len() + 64);
        for (tok, &id) in &vocab {
            let s = interner.intern_key(tok.0.clone());
            interner.sym_ids[s as usize] = id;
        }
        let mut merges = PairMap::with_capacity_and_hasher(model.merges.len(), Default::default());
        let mut merged = String::new();
        for (rank, m) in model.merges.iter().enumerate() {
            let (a, b) = match m {
                json::Merge::Joined(json::JsonStr(s)) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => (a, b),
                        _ => return Err(TokenizerError::Format(format!("merge {rank} ({s:?}) is not \"a b\""))),
                    }
                }
                json::Merge::Pair(json::JsonStr(a), json::JsonStr(b)) => (a.as_ref(), b.as_ref()),
            };
            merged.clear();
            merged.push_str(a);
            merged.push_str(b);
            let sa = interner.intern(a);
            let sb = interner.intern(b);
            let sm = interner.intern(&merged);
            // Python's dict(zip(merges, range(...))): a repeated pair keeps its last rank.
            merges.insert(pair_key(sa, sb), (rank as u32, sm));
        }

        // Added tokens: content -> id, and which of them are special.
        let mut added: Vec<(i64, String, bool)> = Vec::new();
        if let Some(list) = parsed.added_tokens.as_ref().and_then(|a| a.as_array()) {
            for t in list {
                let content = t.get("content").and_then(|c| c.as_str());
                let id = t.get("id").and_then(|c| c.as_i64());
                if let (Some(content), Some(id)) = (content, id) {
                    let special = t.get("special").and_then(|s| s.as_bool()).unwrap_or(false);
                    added.push((id, content.to_string(), special));
                }
            }
        }
        added.sort_by_key(|(id, _, _)| *id);
        let lookup = |name: &str| -> Option<i64> {
            vocab.get(name).copied().or_else(|| {
                added
                    .iter()
                    .find(|(_, c, _)| c == name)
                    .map(|(id, _, _)| *id)
            })
        };
        // A Hugging Face CLIP tokenizer.json names the start and end tokens <|startoftext|> / <|endoftext|>.
        // open_clip matches its own names in a text whatever the file says, and never Hugging Face's.
        let hf_names = [HF_SOT_TOKEN, HF_EOT_TOKEN];
        let sot_id = [SOT_TOKEN, HF_SOT_TOKEN]
            .iter()
            .find_map(|n| lookup(n))
            .ok_or_else(|| TokenizerError::MissingSpecialToken(SOT_TOKEN.into()))?;
        let eot_id = [EOT_TOKEN, HF_EOT_TOKEN]
            .iter()
            .find_map(|n| lookup(n))
            .ok_or_else(|| TokenizerError::MissingSpecialToken(EOT_TOKEN.into()))?;
        let mut special_names = vec![(SOT_TOKEN.to_string(), sot_id), (EOT_TOKEN.to_string(), eot_id)];
        for (id, content, special) in &added {
            let new = !special_names.iter().any(|(n, _)| n == content) && !hf_names.contains(&content.as_str());
            if *special && !content.is_empty() && new {
                special_names.push((
                    content.clone(),
                    vocab.get(content.as_str()).copied().unwrap_or(*id),
                ));
            }
        }
        let specials = special_names
            .iter()
            .map(|(n, _)| SpecialToken {
                chars: n.chars().collect(),
            })
            .collect();
        let cache_ids: HashMap<String, i64> = special_names.iter().cloned().collect();
        let mut cache_key_lens: Vec<usize> = cache_ids.keys().map(|k| k.chars().count()).collect();
        cache_key_lens.sort_unstable();
        cache_key_lens.dedup();

        let enc = byte_encoder();
        let mut byte_sym = [NO_SYM; 256];
        let mut byte_sym_eow = [NO_SYM; 256];
        for b in 0..256 {
            let ch = enc[b].to_string();
            byte_sym[b] = interner.get(&ch);
            byte_sym_eow[b] = interner.get(&format!("{ch}{suffix}"));
        }

        Ok(ClipTokenizer {
            context_length,
            sot_id,
            eot_id,
            specials,
            cache_ids,
            cache_key_lens,
            byte_sym,
            byte_sym_eow,
            sym_ids: interner.sym_ids,
            merges,
        })
    }

    /// Reads a tokenizer.json file (see [`ClipTokenizer::from_json_bytes`]).
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes, context_length)
    }

    /// Token ids exactly as open_clip's tokenizer produces them: `[sot] + bpe ids + [eot]`, truncated
    /// to `context_length` with the last id replaced by `eot` (as open_clip does), but not padded.
    /// Runs the [interrupt check](crate::interrupt) between the pieces of the text, and inside the
    /// cleaning and the BPE of a long one.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let ctx = self.context_length;
        if ctx <= 1 {
            return vec![self.eot_id];
        }
        // Once ctx - 1 BPE ids exist the sequence is truncated and later ids cannot matter.
        let needed = ctx - 1;
        let text = &text[..floor_char_boundary(text, MAX_TEXT_BYTES)];
        let mut bpe: Vec<i64> = Vec::new();
        for_each_clean_chunk(text, |chunk| {
            let lowered = py_lower(chunk);
            self.tokenize_clean(&lowered, &mut bpe, needed)
        });
        let mut out = Vec::with_capacity(ctx.min(bpe.len() + 2));
        out.push(self.sot_id);
        if bpe.len() + 2 > ctx {
            out.extend_from_slice(&bpe[..ctx - 2]);
        } else {
            out.extend_from_slice(&bpe);
        }
        out.push(self.eot_id);
        out
    }

    /// The context length ids are truncated to.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Id of `<start_of_text>`.
    pub fn sot_id(&self) -> i64 {
        self.sot_id
    }

    /// Id of `<end_of_text>`.
    pub fn eot_id(&self) -> i64 {
        self.eot_id
    }

    /// Splits cleaned, lower-cased text with open_clip's pattern and appends the BPE ids of every
    /// piece to `out`; stops once `out` holds `needed` ids.
    fn tokenize_clean(&self, text: &str, out: &mut Vec<i64>, needed: usize) -> ControlFlow<()> {
        if out.len() >= needed {
            return ControlFlow::Break(());
        }
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let n = chars.len();
        let end_of = |j: usize| if j < n { chars[j].0 } else { text.len() };
        let mut i = 0;
        while i < n {
            let c = chars[i].1;
            let mut len = 0;
            for sp in &self.specials {
                let k = sp.chars.len();
                if k > 0
                    && i + k <= n
                    && sp
                        .chars
                        .iter()
                        .zip(&chars[i..i + k])
                        .all(|(&p, &(_, t))| ignorecase_eq(p, t))
                {
                    len = k;
                    break;
                }
            }
            if len == 0 && c == '\'' {
                len = match_contraction(&chars[i + 1..]).map_or(0, |k| k + 1);
            }
            if len == 0 {
                match token_class(c) {
                    TokenClass::Letter => {
                        len = 1;
                        while i + len < n && token_class(chars[i + len].1) == TokenClass::Letter {
                            len += 1;
                        }
                    }
                    TokenClass::Number => len = 1,
                    TokenClass::Other => {
                        len = 1;
                        while i + len < n && token_class(chars[i + len].1) == TokenClass::Other {
                            len += 1;
                        }
                    }
                    TokenClass::Skip => {
                        i += 1;
                        continue;
                    }
                }
            }
            self.bpe_token(&text[chars[i].0..end_of(i + len)], out);
            i += len;
            if out.len() >= needed {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// BPE ids of one regex match, as `self.encoder[t] for t in self.bpe(token).split(' ')`.
    fn bpe_token(&self, token: &str, out: &mut Vec<i64>) {
        let bytes = token.as_bytes();
        if bytes.is_empty() {
            return;
        }
        if !self.cache_ids.is_empty() && self.cache_key_lens.binary_search(&bytes.len()).is_ok() {
            let enc = byte_encoder();
            let encoded: String = bytes.iter().map(|&b| enc[b as usize]).collect();
            if let Some(&id) = self.cache_ids.get(&encoded) {
                out.push(id);
                return;
            }
        }
        let mut syms: Vec<u32> = Vec::with_capacity(bytes.len());
        syms.extend(
            bytes[..bytes.len() - 1]
                .iter()
                .map(|&b| self.byte_sym[b as usize]),
        );
        syms.push(self.byte_sym_eow[bytes[bytes.len() - 1] as usize]);
        for s in self.bpe_symbols(syms) {
            if let Some(&id) = self.sym_ids.get(s as usize) {
                if id >= 0 {
                    out.push(id);
                }
            }
        }
    }

    /// open_clip's BPE merge loop over symbol ids. Each round takes the lowest-ranked pair present and
    /// merges all its occurrences from left to right; a priority queue finds the pairs.
    fn bpe_symbols(&self, mut syms: Vec<u32>) -> Vec<u32> {
        let n = syms.len();
        if n < 2 {
            return syms;
        }
        if n > u32::MAX as usize / 2 {
            // (never reached: a token is a slice of a Rust string far below 2 GiB in practice)
            return syms;
        }
        const NONE: u32 = u32::MAX;
        let merges = &self.merges;
        let rank_of = |a: u32, b: u32| -> Option<(u32, u32)> {
            if a == NO_SYM || b == NO_SYM {
                None
            } else {
                merges.get(&pair_key(a, b)).copied()
            }
        };
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NONE;
        // Entries are `rank << 32 | left position`; a rank identifies its pair, so an entry is still
        // valid when the pair at its position has that rank.
        let initial: Vec<Reverse<u64>> = (0..n - 1)
            .filter_map(|i| {
                rank_of(syms[i], syms[i + 1])
                    .map(|(rank, _)| Reverse(((rank as u64) << 32) | i as u64))
            })
            .collect();
        let mut heap: BinaryHeap<Reverse<u64>> = BinaryHeap::from(initial);
        let mut deferred: Vec<Reverse<u64>> = Vec::new();
        let mut popped = 0usize;
        while let Some(&Reverse(top)) = heap.peek() {
            let rank = (top >> 32) as u32;
            // One round: every occurrence of the pair of this rank, left to right. Pairs created during
            // the round join the queue only afterwards, as in open_clip's loop.
            while let Some(&Reverse(entry)) = heap.peek() {
                if (entry >> 32) as u32 != rank {
                    break;
                }
                heap.pop();
                popped += 1;
                if popped.is_multiple_of(MERGES_PER_CHECK) {
                    interrupt::check();
                }
                let pos = (entry & 0xffff_ffff) as usize;
                let nx = next[pos];
                if nx == NONE {
                    continue;
                }
                let nx = nx as usize;
                let merged = match rank_of(syms[pos], syms[nx]) {
                    Some((r, merged)) if r == rank => merged,
                    _ => continue,
                };
                syms[pos] = merged;
                let nn = next[nx];
                next[pos] = nn;
                if nn != NONE {
                    prev[nn as usize] = pos as u32;
                }
                syms[nx] = NO_SYM;
                next[nx] = NONE;
                let pv = prev[pos];
                if pv != NONE {
                    if let Some((r2, _)) = rank_of(syms[pv as usize], merged) {
                        deferred.push(Reverse(((r2 as u64) << 32) | pv as u64));
                    }
                }
                if nn != NONE {
                    if let Some((r2, _)) = rank_of(merged, syms[nn as usize]) {
                        deferred.push(Reverse(((r2 as u64) << 32) | pos as u64));
                    }
                }
            }
            heap.extend(deferred.drain(..));
        }
        let mut out = Vec::new();
        let mut i = 0u32;
        while i != NONE {
            out.push(syms[i as usize]);
            i = next[i as usize];
        }
        out
    }
}

/// Key of a symbol pair in the merge table.
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// `pair_key(left, right)` -> (rank, merged symbol). Fx hashing: the default SipHash is several times slower here.
type PairMap = FxHashMap<u64, (u32, u32)>;

/// Numbers the strings of the vocabulary and the merges while the tokenizer is built. Keys are borrowed from
/// the tokenizer.json bytes where they can be; a string seen only in a merge is copied.
struct Interner<'a> {
    symbols: FxHashMap<Cow<'a, str>, u32>,
    /// Vocabulary id of each symbol, -1 for a symbol that is not in the vocabulary.
    sym_ids: Vec<i64>,
}

impl<'a> Interner<'a> {
    fn with_capacity(n: usize) -> Self {
        Interner { symbols: FxHashMap::with_capacity_and_hasher(n, Default::default()), sym_ids: Vec::with_capacity(n) }
    }

    fn intern(&mut self, s: &str) -> u32 {
        match self.symbols.get(s) {
            Some(&id) => id,
            None => self.intern_key(Cow::Owned(s.to_owned())),
        }
    }

    fn intern_key(&mut self, s: Cow<'a, str>) -> u32 {
        let next = self.sym_ids.len() as u32;
        let id = *self.symbols.entry(s).or_insert(next);
        if id == next {
            self.sym_ids.push(-1);
        }
        id
    }

    fn get(&self, s: &str) -> u32 {
        self.symbols.get(s).copied().unwrap_or(NO_SYM)
    }
}

// ------------------------------------------------------------------------------------------------
// Text cleaning: ftfy.fix_text, html.unescape x2, strip / split / join, lower.
// ------------------------------------------------------------------------------------------------

/// open_clip's text cleaning `how`, as its tokenizers run it before tokenizing.
pub fn clean(text: &str, how: TextClean) -> String {
    match how {
        TextClean::Lower => clean_lower(text),
        TextClean::Whitespace => clean_whitespace(text),
        TextClean::Canonicalize => clean_canonicalize(text),
    }
}

/// open_clip's `_clean_lower`: `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean_lower(text: &str) -> String {
    py_lower(&clean_whitespace(text))
}

/// open_clip's `_clean_whitespace`: `whitespace_clean(basic_clean(text))`.
pub fn clean_whitespace(text: &str) -> String {
    join_words(&basic_clean(text))
}

/// open_clip's `_clean_canonicalize`: `canonicalize_text(basic_clean(text))`, which turns `_` into a space, removes
/// ASCII punctuation (Python's `string.punctuation`), lower-cases and joins the words with single spaces.
pub fn clean_canonicalize(text: &str) -> String {
    let kept: String = basic_clean(text)
        .chars()
        .map(|c| if c == '_' { ' ' } else { c })
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    join_words(&py_lower(&kept))
}

/// `ftfy.fix_text` and `html.unescape` twice (`basic_clean` without its `strip`, which the callers' word joining
/// makes redundant).
fn basic_clean(text: &str) -> String {
    let mut cleaned = String::new();
    for_each_clean_chunk(text, |chunk| {
        cleaned.push_str(chunk);
        ControlFlow::Continue(())
    });
    cleaned
}

/// Python's `" ".join(text.split())`.
fn join_words(text: &str) -> String {
    text.split(py_isspace).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Runs `ftfy.fix_text` and then `html.unescape` twice over `text`, handing the result to `sink` in
/// consecutive chunks. Every chunk but the last ends with `' '` or `'\n'`; no step of the cleaning
/// or of the tokenizer looks across those, so chunks can be lower-cased and tokenized one by one.
fn for_each_clean_chunk(text: &str, mut sink: impl FnMut(&str) -> ControlFlow<()>) {
    let mut unescape = true;
    let mut pending = String::new();
    let mut flush = |pending: &mut String| -> ControlFlow<()> {
        let r = {
            let once = html_unescape(pending);
            let twice = html_unescape(&once);
            sink(&twice)
        };
        pending.clear();
        r
    };
    for segment in ftfy_segments(text) {
        if unescape && segment.contains('<') {
            // ftfy's unescape_html="auto": off for this segment and all later ones.
            unescape = false;
        }
        for piece in segment.split_inclusive(' ') {
            interrupt::check();
            let fixed = fix_piece(piece, unescape);
            pending.push_str(&fixed);
            if (pending.ends_with(' ') || pending.ends_with('\n')) && flush(&mut pending).is_break()
            {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = flush(&mut pending);
    }
}

/// ftfy.fix_text's segments: up to and including each '\n', at most `MAX_DECODE_LENGTH` code points.
fn ftfy_segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..line_end];
        let cut = if line.len() > MAX_DECODE_LENGTH {
            // more bytes than the limit: maybe more code points too
            line.char_indices()
                .nth(MAX_DECODE_LENGTH)
                .map_or(line_end, |(i, _)| i)
        } else {
            line_end
        };
        let seg = &rest[..cut];
        rest = &rest[cut..];
        Some(seg)
    })
}

/// ftfy's `fix_and_explain` loop (without `fix_encoding`) on one piece of a segment, for at most
/// [`MAX_FIX_ROUNDS`] rounds.
fn fix_piece(piece: &str, unescape: bool) -> Cow<'_, str> {
    if piece
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'&')
        || piece == "\n"
    {
        return Cow::Borrowed(piece);
    }
    let mut text: Cow<'_, str> = Cow::Borrowed(piece);
    for _ in 0..MAX_FIX_ROUNDS {
        interrupt::check();
        let mut next: Option<String> = None;
        {
            let mut step = |f: &dyn Fn(&str) -> Option<String>| {
                if let Some(s) = f(next.as_deref().unwrap_or(&text)) {
                    next = Some(s);
                }
            };
            if unescape {
                step(&ftfy_unescape_html);
            }
            step(&fix_char_maps);
            step(&fix_line_breaks);
            step(&remove_escapes_and_controls);
            step(&nfc_py);
        }
        match next {
            Some(n) if n != *text => text = Cow::Owned(n),
            _ => return text,
        }
    }
    text
}

/// ftfy's `unescape_html` (`&#?[0-9A-Za-z]{1,24};` replaced through `ftfy.chardata.HTML_ENTITIES`, or through
/// `html.unescape` for `&#...;` when that consumes the whole reference), repeated until nothing changes, in one
/// pass of linear time. ftfy's loop needs a pass per level of nesting (`&amp;amp;amp;lt;` takes four), which is
/// quadratic in the length of a word of nested entities. References never overlap and a replacement only ever
/// makes new references, never breaks one, so the result does not depend on the order of replacements: here each
/// reference is replaced as soon as its `;` is read, and the replacement is read again as input, so that what it
/// forms with the text before and after it is found too.
fn ftfy_unescape_html(s: &str) -> Option<String> {
    if !s.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    // Characters still to read, last first: the input's next one, or a replacement being read again.
    let mut unread: Vec<char> = Vec::new();
    for c in s.chars() {
        unread.push(c);
        while let Some(c) = unread.pop() {
            out.push(c);
            if c != ';' {
                continue;
            }
            let Some(start) = reference_start(&out) else { continue };
            if let Some(replacement) = ftfy_entity_replacement(&out[start..]) {
                unread.extend(replacement.chars().rev());
                out.truncate(start);
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// Where the reference `&#?[0-9A-Za-z]{1,24};` that ends `text` (which ends with `;`) starts, if one does.
fn reference_start(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let semicolon = b.len() - 1;
    let mut i = semicolon;
    while i > 0 && semicolon - i < 25 && b[i - 1].is_ascii_alphanumeric() {
        i -= 1;
    }
    let run = semicolon - i;
    if !(1..=24).contains(&run) || i == 0 {
        return None;
    }
    if b[i - 1] == b'&' {
        return Some(i - 1);
    }
    (b[i - 1] == b'#' && i >= 2 && b[i - 2] == b'&').then(|| i - 2)
}

/// What ftfy's `unescape_html` replaces one reference `m` (`&...;`) with, when that changes it.
fn ftfy_entity_replacement(m: &str) -> Option<Cow<'_, str>> {
    let replacement: Cow<'_, str> = if let Some(v) = lookup_sorted(tables::HTML5, &m[1..]) {
        Cow::Borrowed(v)
    } else if let Some(v) = lookup_sorted(tables::FTFY_EXTRA_ENTITIES, &m[1..]) {
        Cow::Borrowed(v)
    } else if m.starts_with("&#") {
        let u = html_unescape(m);
        if u.contains(';') {
            return None;
        }
        Cow::Owned(u.into_owned())
    } else {
        return None;
    };
    (replacement != m).then_some(replacement)
}

/// `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width` and `uncurl_quotes`, in ftfy's
/// order; all four map single code points, so they compose per code point.
fn fix_char_maps(s: &str) -> Option<String> {
    fn needs_map(c: char) -> bool {
        let u = c as u32;
        (0x80..=0x9f).contains(&u)
            || ((0x132..=0x1f3).contains(&u) && lookup_char(tables::LIGATURES, c).is_some())
            || (0xfb00..=0xfb06).contains(&u)
            || (0xff01..=0xffef).contains(&u)
            || u == 0x3000
            || u == 0x2bc
            || (0x2018..=0x201f).contains(&u)
    }
    if s.is_ascii() || !s.chars().any(needs_map) {
        return None;
    }
    fn uncurl(c: char, out: &mut String) {
        match c as u32 {
            0x2bc | 0x2018..=0x201b => out.push('\''),
            0x201c..=0x201f => out.push('"'),
            _ => out.push(c),
        }
    }
    fn width(c: char, out: &mut String) {
        let u = c as u32;
        if u == 0x3000 {
            uncurl(' ', out);
        } else if (0xff01..=0xffef).contains(&u) {
            match lookup_char(tables::WIDTH_MAP, c) {
                Some(r) => r.chars().for_each(|c| uncurl(c, out)),
                None => uncurl(c, out),
            }
        } else {
            uncurl(c, out);
        }
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let u = c as u32;
        let c = if (0x80..=0x9f).contains(&u) {
            tables::SLOPPY_1252_C1[(u - 0x80) as usize]
        } else {
            c
        };
        match lookup_char(tables::LIGATURES, c) {
            Some(r) => r.chars().for_each(|c| width(c, &mut out)),
            None => width(c, &mut out),
        }
    }
    if out == s {
        None
    } else {
        Some(out)
    }
}

/// ftfy's `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and U+0085 become '\n'.
fn fix_line_breaks(s: &str) -> Option<String> {
    if !s
        .chars()
        .any(|c| matches!(c, '\r' | '\u{2028}' | '\u{2029}' | '\u{85}'))
    {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\r' => {
                if it.peek() == Some(&'\n') {
                    it.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            _ => out.push(c),
        }
    }
    Some(out)
}

/// ftfy's `remove_control_chars` set.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}

/// ftfy's `remove_terminal_escapes` (`\x1b\[((?:\d|;)*)([a-zA-Z])` removed) followed by
/// `remove_control_chars`.
fn remove_escapes_and_controls(s: &str) -> Option<String> {
    if !s.chars().any(is_removed_control) {
        // every ANSI escape starts with ESC, itself a removed control
        return None;
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j] == ';' || in_ranges(tables::RE_DIGIT, chars[j])) {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        if !is_removed_control(c) {
            out.push(c);
        }
        i += 1;
    }
    Some(out)
}

/// `unicodedata.normalize('NFC', s)` with Python's Unicode version: code points unassigned there are
/// inert starters, so the text is normalised around them.
fn nfc_py(s: &str) -> Option<String> {
    if s.is_ascii() {
        return None;
    }
    let unassigned = |c: char| (c as u32) >= 0x378 && in_ranges(tables::UNASSIGNED, c);
    let out: String = if !s.chars().any(unassigned) {
        if is_nfc_quick(s.chars()) == IsNormalized::Yes {
            return None;
        }
        s.nfc().collect()
    } else {
        let mut out = String::with_capacity(s.len());
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if unassigned(c) {
                out.extend(s[start..i].nfc());
                out.push(c);
                start = i + c.len_utf8();
            }
        }
        out.extend(s[start..].nfc());
        out
    };
    if out == s {
        None
    } else {
        Some(out)
    }
}

/// The largest index `<= max` that is a char boundary of `s` (`str::floor_char_boundary`, unstable).
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// Python's `html.unescape`.
fn html_unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'&' {
            i += 1;
            continue;
        }
        let j = i + 1;
        if j < b.len() && b[j] == b'#' {
            // '#[0-9]+;?' | '#[xX][0-9a-fA-F]+;?'
            let (digits_start, radix) = if j + 1 < b.len() && (b[j + 1] == b'x' || b[j + 1] == b'X')
            {
                (j + 2, 16)
            } else {
                (j + 1, 10)
            };
            let mut k = digits_start;
            while k < b.len()
                && (if radix == 16 {
                    b[k].is_ascii_hexdigit()
                } else {
                    b[k].is_ascii_digit()
                })
            {
                k += 1;
            }
            if k == digits_start {
                // '&#x' without hex digits: '#[0-9]+' cannot match 'x' and names cannot start with '#'
                i += 1;
                continue;
            }
            let mut value: u32 = 0;
            for &d in &b[digits_start..k] {
                let d = (d as char).to_digit(radix).unwrap_or(0);
                value = value
                    .saturating_mul(radix)
                    .saturating_add(d)
                    .min(0x0100_0000);
            }
            let end = if k < b.len() && b[k] == b';' {
                k + 1
            } else {
                k
            };
            out.push_str(&s[last..i]);
            if let Some(&(_, c)) = tables::INVALID_CHARREFS.iter().find(|(n, _)| *n == value) {
                out.push(c);
            } else if (0xD800..=0xDFFF).contains(&value) || value > 0x10FFFF {
                out.push('\u{FFFD}');
            } else if tables::INVALID_CODEPOINTS.binary_search(&value).is_ok() {
                // removed
            } else if let Some(c) = char::from_u32(value) {
                out.push(c);
            }
            last = end;
            i = end;
            continue;
        }
        // '[^\t\n\f <&#;]{1,32};?'
        let mut k = j;
        let mut count = 0;
        for c in s[j..].chars() {
            if count == 32 || matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';') {
                break;
            }
            k += c.len_utf8();
            count += 1;
        }
        if count == 0 {
            i += 1;
            continue;
        }
        let end = if k < b.len() && b[k] == b';' {
            k + 1
        } else {
            k
        };
        let name = &s[j..end];
        if let Some(v) = lookup_sorted(tables::HTML5, name) {
            out.push_str(&s[last..i]);
            out.push_str(v);
            last = end;
        } else {
            // the longest prefix (of at least 2 code points) that is an entity name
            let bounds: Vec<usize> = name.char_indices().map(|(p, _)| p).skip(2).collect();
            for &p in bounds.iter().rev() {
                if let Some(v) = lookup_sorted(tables::HTML5, &name[..p]) {
                    out.push_str(&s[last..i]);
                    out.push_str(v);
                    out.push_str(&name[p..]);
                    last = end;
                    break;
                }
            }
        }
        i = end;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Python's `str.isspace()`.
fn py_isspace(c: char) -> bool {
    match c {
        '\t'..='\r' | '\x1c'..='\x1f' | ' ' => true,
        _ if (c as u32) < 0x85 => false,
        _ => tables::PY_ISSPACE.contains(&c),
    }
}

/// Python's `str.lower()`: full lowercase mappings, with U+03A3 becoming final sigma when preceded by
/// a cased letter and not followed by one (case-ignorable code points skipped on both sides).
fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == '\u{3A3}' {
            let before = chars[..i].iter().rev().find(|&&p| case_ctx(p) != 1);
            let after = chars[i + 1..].iter().find(|&&p| case_ctx(p) != 1);
            let final_sigma = before.is_some_and(|&p| case_ctx(p) == 2)
                && after.is_none_or(|&p| case_ctx(p) != 2);
            out.push(if final_sigma { '\u{3C2}' } else { '\u{3C3}' });
        } else {
            match lookup_char(tables::LOWER, c) {
                Some(l) => out.push_str(l),
                None => out.push(c),
            }
        }
    }
    out
}

/// 1 = case-ignorable, 2 = cased and not case-ignorable, 0 = neither (Python's tables).
fn case_ctx(c: char) -> u8 {
    lookup_class(tables::CASE_CTX, c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenClass {
    /// `[\p{L}]`
    Letter,
    /// `[\p{N}]`
    Number,
    /// `[^\s\p{L}\p{N}]`
    Other,
    /// whitespace (removed by `whitespace_clean` or `\s`), or U+0345 that no alternative matches
    Skip,
}

fn token_class(c: char) -> TokenClass {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            TokenClass::Letter
        } else if c.is_ascii_digit() {
            TokenClass::Number
        } else if py_isspace(c) {
            TokenClass::Skip
        } else {
            TokenClass::Other
        };
    }
    if py_isspace(c) {
        return TokenClass::Skip;
    }
    match lookup_class(tables::TOKEN_CLASS, c) {
        1 => TokenClass::Letter,
        2 => TokenClass::Number,
        3 | 4 => TokenClass::Skip,
        _ => TokenClass::Other,
    }
}

/// Whether text char `t` matches pattern char `p` under the regex module's IGNORECASE.
fn ignorecase_eq(p: char, t: char) -> bool {
    if p == t {
        return true;
    }
    if p.is_ascii() {
        return (p.is_ascii_alphabetic() && t.is_ascii() && p.eq_ignore_ascii_case(&t))
            || tables::IGNORECASE_EXTRA
                .iter()
                .any(|&(a, x)| a == p && x == t);
    }
    // Non-ASCII special tokens (never the CLIP ones): simple case equivalence.
    let single = |c: char, lower: bool| {
        let mut it: Box<dyn Iterator<Item = char>> = if lower {
            Box::new(c.to_lowercase())
        } else {
            Box::new(c.to_uppercase())
        };
        match (it.next(), it.next()) {
            (Some(x), None) => x,
            _ => c,
        }
    };
    single(p, true) == single(t, true) || single(p, false) == single(t, false)
}

/// `'s|'t|'re|'ve|'m|'ll|'d` after the apostrophe: the length of the first alternative that matches.
fn match_contraction(rest: &[(usize, char)]) -> Option<usize> {
    const ALTS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];
    ALTS.iter().find_map(|alt| {
        let k = alt.len();
        (rest.len() >= k
            && alt
                .chars()
                .zip(rest)
                .all(|(p, &(_, t))| ignorecase_eq(p, t)))
        .then_some(k)
    })
}

/// The byte-to-unicode map of CLIP's `bytes_to_unicode()`.
fn byte_encoder() -> &'static [char; 256] {
    static ENC: OnceLock<[char; 256]> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut enc = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7e).contains(&b)
                || (0xa1..=0xac).contains(&b)
                || (0xae..=0xff).contains(&b);
            enc[b as usize] = if printable {
                char::from_u32(b).unwrap_or('\0')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\0')
            };
        }
        enc
    })
}

fn lookup_sorted(
    table: &'static [(&'static str, &'static str)],
    key: &str,
) -> Option<&'static str> {
    table
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .map(|i| table[i].1)
}

fn lookup_char(table: &'static [(char, &'static str)], key: char) -> Option<&'static str> {
    table
        .binary_search_by(|(k, _)| k.cmp(&key))
        .ok()
        .map(|i| table[i].1)
}

/// The index of the entry of a sorted table of disjoint code point ranges that holds `c`.
fn range_index<T>(table: &[T], c: char, bounds: impl Fn(&T) -> (u32, u32)) -> Option<usize> {
    let u = c as u32;
    table
        .binary_search_by(|entry| {
            let (lo, hi) = bounds(entry);
            if hi < u {
                std::cmp::Ordering::Less
            } else if lo > u {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .ok()
}

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    range_index(table, c, |&(lo, hi)| (lo, hi)).is_some()
}

fn lookup_class(table: &[(u32, u32, u8)], c: char) -> u8 {
    range_index(table, c, |&(lo, hi, _)| (lo, hi)).map_or(0, |i| table[i].2)
}
