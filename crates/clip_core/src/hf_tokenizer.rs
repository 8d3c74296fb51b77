//! Hugging Face tokenizers as open_clip's `HFTokenizer` runs them: the model's text cleaning, then the
//! `tokenizer.json` pipeline (normalizer, pre-tokenizer, model, post-processor) by the `tokenizers` crate, truncated
//! to the context with the post-processor's special tokens kept (transformers' `truncation=True`, right side).
//! SigLIP (T5's SentencePiece Unigram), SigLIP 2 (Gemma's byte-fallback BPE) and the multilingual models use it.
//!
//! `tools/export_model.py` writes the tokenizer transformers built for open_clip, so no version of transformers
//! is involved here. Padding is the caller's ([`crate::ClipModel`] pads with the manifest's pad id).
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use crate::error::{check_language, ClipError};
use crate::interrupt;
use crate::manifest::{Languages, TextClean};
use crate::tokenizer::{clean, floor_char_boundary, TokenizerError, MAX_TEXT_BYTES};

/// Characters of cleaned text first tokenized per token of context. The tokenizers crate tokenizes a whole text
/// before truncating (a MiB took 1-1.5 s and 200 MB here), so a prefix of the cleaned text is tokenized instead,
/// four times longer each time it gives fewer than the context and [`MARGIN_TOKENS`] more tokens (a run of
/// characters the vocabulary lacks can be one token): what is cut lies past the context, and a text of ordinary
/// words costs its first few thousand characters.
const CHARS_PER_TOKEN: usize = 64;
/// Tokens past the context before the cut: where the cut splits a word changes the tokens of that word, which then
/// lie past the context unless the word is longer than this (one MiB-long word gave the same ids in the tests).
const MARGIN_TOKENS: usize = 8;

pub struct HfTokenizer {
    inner: Tokenizer,
    clean: TextClean,
    context_length: usize,
    languages: Option<LanguageTemplate>,
}

/// The manifest's [`Languages`] with the template's tokens as ids.
struct LanguageTemplate {
    default: String,
    codes: Vec<String>,
    /// The template's items: a fixed id, the code's place, or the text's.
    items: Vec<TemplateItem>,
}

enum TemplateItem {
    Token(u32),
    Language,
    Text,
}

impl HfTokenizer {
    /// Reads a `tokenizer.json`; ids are truncated to `context_length`.
    pub fn from_json_bytes(
        bytes: &[u8],
        clean: TextClean,
        context_length: usize,
        languages: Option<&Languages>,
    ) -> Result<Self, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::InvalidContextLength(context_length));
        }
        let format = |e: tokenizers::Error| TokenizerError::Format(e.to_string());
        let mut inner = Tokenizer::from_bytes(bytes).map_err(format)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length: context_length, ..TruncationParams::default() }))
            .map_err(format)?;
        // The crate truncates a text to the context less the special tokens: there must be room for one token.
        let special = inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if special >= context_length {
            let reason = format!("{special} special tokens leave no room in a context of {context_length}");
            return Err(TokenizerError::Format(reason));
        }
        let languages = match languages {
            None => None,
            Some(l) => {
                let id = |token: &str| {
                    inner.token_to_id(token).ok_or_else(|| TokenizerError::MissingSpecialToken(token.into()))
                };
                for code in &l.codes {
                    id(code)?;
                }
                let items = l
                    .template
                    .iter()
                    .map(|item| match item.as_str() {
                        "$A" => Ok(TemplateItem::Text),
                        "{language}" => Ok(TemplateItem::Language),
                        token => id(token).map(TemplateItem::Token),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let count = |wanted: fn(&TemplateItem) -> bool| items.iter().filter(|i| wanted(i)).count();
                let texts = count(|i| matches!(i, TemplateItem::Text));
                if (texts, count(|i| matches!(i, TemplateItem::Language))) != (1, 1) {
                    return Err(TokenizerError::Format("a language template needs one $A and one {language}".into()));
                }
                if items.len() > context_length {
                    return Err(TokenizerError::InvalidContextLength(context_length));
                }
                Some(LanguageTemplate { default: l.default.clone(), codes: l.codes.clone(), items })
            }
        };
        Ok(HfTokenizer { inner, clean, context_length, languages })
    }

    /// The ids open_clip's `HFTokenizer` gives `text`, before padding. Only the first [`MAX_TEXT_BYTES`] of the
    /// text are read, as by the CLIP tokenizer, and only a prefix of the cleaned text whose tokens fill the context
    /// is tokenized (see [`CHARS_PER_TOKEN`]). `language` is the code of the text's language for models that take
    /// one (NLLB; their default when `None`).
    pub fn encode(&self, text: &str, language: Option<&str>) -> Result<Vec<i64>, ClipError> {
        let text = &text[..floor_char_boundary(text, MAX_TEXT_BYTES)];
        let mut cleaned = clean(text, self.clean);
        self.cut_past_the_context(&mut cleaned)?;
        let Some(template) = &self.languages else {
            check_language(None, language)?;
            let encoding = self.inner.encode(cleaned, true).map_err(tokenizer_failed)?;
            return Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect());
        };
        let code = language.unwrap_or(&template.default);
        check_language(Some(&template.codes), Some(code))?;
        let code_id = self.inner.token_to_id(code).expect("codes are checked when the tokenizer is read");
        // What the tokenizers crate does with a template post-processor: the text's own tokens, cut so that the
        // template's tokens fit in the context, then the template around them.
        let encoding = self.inner.encode(cleaned, false).map_err(tokenizer_failed)?;
        let room = self.context_length - (template.items.len() - 1);
        let tokens = &encoding.get_ids()[..encoding.get_ids().len().min(room)];
        let mut ids = Vec::with_capacity(tokens.len() + template.items.len());
        for item in &template.items {
            match item {
                TemplateItem::Token(id) => ids.push(i64::from(*id)),
                TemplateItem::Language => ids.push(i64::from(code_id)),
                TemplateItem::Text => ids.extend(tokens.iter().map(|&id| i64::from(id))),
            }
        }
        Ok(ids)
    }

    /// Cuts `cleaned` where its tokens run past the context by [`MARGIN_TOKENS`] (see [`CHARS_PER_TOKEN`]). The
    /// tokenizers crate cannot be interrupted: the interrupt check runs between its encodings, of which the longest,
    /// the whole text when even its longest prefix is short of tokens (a MiB of characters the vocabulary lacks), took
    /// 0.35 s here.
    fn cut_past_the_context(&self, cleaned: &mut String) -> Result<(), ClipError> {
        let mut chars = self.context_length * CHARS_PER_TOKEN;
        while let Some((cut, _)) = cleaned.char_indices().nth(chars) {
            interrupt::check();
            // Truncated to the context, the rest of the tokens are in the overflowing parts.
            let encoding = self.inner.encode(&cleaned[..cut], false).map_err(tokenizer_failed)?;
            let tokens = encoding.len() + encoding.get_overflowing().iter().map(|o| o.len()).sum::<usize>();
            if tokens >= self.context_length + MARGIN_TOKENS {
                cleaned.truncate(cut);
                break;
            }
            chars *= 4;
        }
        Ok(())
    }
}

fn tokenizer_failed(e: tokenizers::Error) -> ClipError {
    ClipError::Inference(format!("tokenizer: {e}"))
}
