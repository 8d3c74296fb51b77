//! Hugging Face tokenizers as open_clip's `HFTokenizer` runs them: the model's text cleaning, then the
//! `tokenizer.json` pipeline (normalizer, pre-tokenizer, model, post-processor) by the `tokenizers` crate, truncated
//! to the context with the post-processor's special tokens kept (transformers' `truncation=True`, right side).
//! SigLIP (T5's SentencePiece Unigram), SigLIP 2 (Gemma's byte-fallback BPE) and the multilingual models use it.
//!
//! `tools/export_model.py` writes the tokenizer transformers built for open_clip, so no version of transformers
//! is involved here. Padding is the caller's ([`crate::ClipModel`] pads with the manifest's pad id).
use tokenizers::{Tokenizer, TruncationParams};

use crate::manifest::TextClean;
use crate::tokenizer::{
    clean_canonicalize, clean_lower, clean_whitespace, floor_char_boundary, TokenizerError, MAX_TEXT_BYTES,
};

pub struct HfTokenizer {
    inner: Tokenizer,
    clean: TextClean,
}

impl HfTokenizer {
    /// Reads a `tokenizer.json`; ids are truncated to `context_length`.
    pub fn from_json_bytes(bytes: &[u8], clean: TextClean, context_length: usize) -> Result<Self, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::InvalidContextLength(context_length));
        }
        let format = |e: tokenizers::Error| TokenizerError::Format(e.to_string());
        let mut inner = Tokenizer::from_bytes(bytes).map_err(format)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length: context_length, ..TruncationParams::default() }))
            .map_err(format)?;
        Ok(HfTokenizer { inner, clean })
    }

    /// The ids open_clip's `HFTokenizer` gives `text`, before padding. Only the first [`MAX_TEXT_BYTES`] of the
    /// text are read, as by the CLIP tokenizer; the context is full long before.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, TokenizerError> {
        let text = &text[..floor_char_boundary(text, MAX_TEXT_BYTES)];
        let cleaned = match self.clean {
            TextClean::Lower => clean_lower(text),
            TextClean::Whitespace => clean_whitespace(text),
            TextClean::Canonicalize => clean_canonicalize(text),
        };
        let encoding = self.inner.encode(cleaned, true).map_err(|e| TokenizerError::Format(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }
}
