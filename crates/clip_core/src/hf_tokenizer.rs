//! Hugging Face tokenizers as open_clip's `HFTokenizer` runs them: the model's text cleaning, then the
//! `tokenizer.json` pipeline (normalizer, pre-tokenizer, model, post-processor) by the `tokenizers` crate, truncated
//! to the context with the post-processor's special tokens kept (transformers' `truncation=True`, right side).
//! SigLIP (T5's SentencePiece Unigram), SigLIP 2 (Gemma's byte-fallback BPE) and the multilingual models use it.
//!
//! `tools/export_model.py` writes the tokenizer transformers built for open_clip, so no version of transformers
//! is involved here. Padding is the caller's ([`crate::ClipModel`] pads with the manifest's pad id).
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::ClipError;
use crate::manifest::{Languages, TextClean};
use crate::tokenizer::{
    clean_canonicalize, clean_lower, clean_whitespace, floor_char_boundary, TokenizerError, MAX_TEXT_BYTES,
};

/// Characters of cleaned text tokenized per token of context. The tokenizers crate tokenizes a whole text before
/// truncating (a MiB took 1-1.5 s and 200 MB here), so the cleaned text is cut first, far enough that the context
/// is full before the cut unless tokens average more than this many characters (cleaning has already folded runs
/// of whitespace), which no vocabulary of these models comes near.
const CHARS_PER_TOKEN: usize = 64;

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
        let languages = match languages {
            None => None,
            Some(l) => {
                let id = |token: &str| inner.token_to_id(token).ok_or_else(|| TokenizerError::MissingSpecialToken(token.into()));
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
                if items.len() > context_length {
                    return Err(TokenizerError::InvalidContextLength(context_length));
                }
                Some(LanguageTemplate { default: l.default.clone(), codes: l.codes.clone(), items })
            }
        };
        Ok(HfTokenizer { inner, clean, context_length, languages })
    }

    /// The ids open_clip's `HFTokenizer` gives `text`, before padding. Only the first [`MAX_TEXT_BYTES`] of the
    /// text are read, as by the CLIP tokenizer, and only the first [`CHARS_PER_TOKEN`] characters per token of
    /// context of the cleaned text are tokenized; the context is full long before. `language` is the code of the
    /// text's language for models that take one (NLLB; their default when `None`).
    pub fn encode(&self, text: &str, language: Option<&str>) -> Result<Vec<i64>, ClipError> {
        let text = &text[..floor_char_boundary(text, MAX_TEXT_BYTES)];
        let mut cleaned = match self.clean {
            TextClean::Lower => clean_lower(text),
            TextClean::Whitespace => clean_whitespace(text),
            TextClean::Canonicalize => clean_canonicalize(text),
        };
        if let Some((cut, _)) = cleaned.char_indices().nth(self.context_length * CHARS_PER_TOKEN) {
            cleaned.truncate(cut);
        }
        let failed = |e: tokenizers::Error| ClipError::Inference(format!("tokenizer: {e}"));
        let Some(template) = &self.languages else {
            if let Some(code) = language {
                return Err(ClipError::takes_no_language(code));
            }
            let encoding = self.inner.encode(cleaned, true).map_err(failed)?;
            return Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect());
        };
        let code = language.unwrap_or(&template.default);
        if !template.codes.iter().any(|c| c == code) {
            return Err(ClipError::Language(format!("{code:?} is not a language code of this model")));
        }
        let code_id = self.inner.token_to_id(code).expect("codes are checked when the tokenizer is read");
        // What the tokenizers crate does with a template post-processor: the text's own tokens, cut so that the
        // template's tokens fit in the context, then the template around them.
        let encoding = self.inner.encode(cleaned, false).map_err(failed)?;
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
}
