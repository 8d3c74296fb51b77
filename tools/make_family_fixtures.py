#!/usr/bin/env python3
"""Builds tests/fixtures/families/<family>/: a tiny model of each family besides OpenAI-vocabulary CLIP, exported by
tools/export_model.py with random weights, with open_clip's token ids, embeddings and classification
probabilities of tests/fixtures/family_texts.json and the fixture images (reference.json).

No hub is reachable, so the Hugging Face tokenizers are stand-ins trained here on the fixture texts with the
`tokenizers` package, of the kinds the real models use: a SentencePiece-style Unigram with `$A </s>` and pad = eos
(T5, SigLIP), a byte-fallback BPE with pad 0 and `$A <eos>` (Gemma, SigLIP 2) and a Unigram with `<s> $A </s>`
and pad 1 (XLM-RoBERTa). open_clip loads them from a local folder exactly as it loads the real ones (HFTokenizer,
the config's cleaning). MobileCLIP uses OpenAI's BPE. The XLM-RoBERTa text tower is transformers' own model
class from a small local config (open_clip's `local-dir:` models), with random weights.

Run from the repository root with the venv of scripts/setup.sh --python: .venv/bin/python tools/make_family_fixtures.py
(`--stand-in-tokenizer KIND DIR` only writes a stand-in tokenizer, for scripts/parity.sh's full-size models).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import M2M100Config, NllbTokenizer, PreTrainedTokenizerFast, XLMRobertaConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures"
# fixture name: (tiny open_clip config in tools/model_configs, stand-in tokenizer or None for OpenAI's BPE), or a
# function that makes a local-dir: model and returns its name
FAMILIES = {
    "siglip": ("siglip-tiny", "unigram"),
    "siglip2": ("siglip2-tiny", "byte_fallback_bpe"),
    "mobileclip": ("mobileclip-tiny", None),
    "xlm-roberta": "xlm_roberta_model",
    "nllb": "nllb_model",
}
# open_clip's OpenAI image normalisation, which the XLM-RoBERTa CLIP weights use.
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def corpus():
    """The texts the stand-in tokenizers learn from: the fixture texts and the tokenizer cases (many scripts)."""
    texts = json.loads((FIXTURES / "texts.json").read_text())
    texts += [c["text"] for c in json.loads((FIXTURES / "tokenizer_cases.json").read_text())["cases"]]
    return texts


def unigram(out):
    """T5's shape: NFKC, repeated spaces folded, Metaspace, Unigram; `</s>` appended; pad = eos."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      max_piece_length=12)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="</s>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=64).save_pretrained(out)


def byte_fallback_bpe(out):
    """Gemma's shape: spaces as `▁`, no pre-tokenizer, BPE whose unknown characters fall back to `<0xNN>` byte
    tokens; `<eos>` appended, no `<bos>`; pad 0."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, limit_alphabet=300)
    tok.train_from_iterator(corpus(), trainer)
    # Byte tokens are plain vocabulary entries (not added tokens that would match in the text), as in Gemma's.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                            unk_token="<unk>", model_max_length=64).save_pretrained(out)


def xlm_roberta_unigram(out):
    """XLM-RoBERTa's shape: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3; `<s> $A </s>`; no lower-casing."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", max_piece_length=12)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>", model_max_length=77).save_pretrained(out)
    return tok.get_vocab_size()


def xlm_roberta_model(root):
    """A local-dir: model of xlm-roberta-base-ViT-B-32's shape: an XLM-RoBERTa encoder (2 layers, width 32) with
    mean pooling and the MLP projection, and open_clip's ViT (as clip-tiny's)."""
    folder = Path(root) / "xlm-roberta-tiny"
    folder.mkdir()
    vocab = xlm_roberta_unigram(folder)
    XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=79, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2).save_pretrained(folder)
    vision = json.loads((ROOT / "tools/model_configs/clip-tiny.json").read_text())["vision_cfg"]
    text = {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_pooler_type": "mean_pooler",
            "context_length": 77}
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}, "preprocess_cfg": OPENAI_PREPROCESS}))
    return f"local-dir:{folder}"


def nllb_model(root):
    """A local-dir: model of nllb-clip-base's shape: an NLLB (M2M100) encoder (2 layers, width 32) pooled at its
    first token, which is the text's language code, with a linear projection, and open_clip's ViT. Its tokenizer is
    transformers' NllbTokenizer (language codes as special tokens, `<code> $A </s>`) over a BPE trained here."""
    folder = Path(root) / "nllb-tiny"
    folder.mkdir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], limit_alphabet=300)
    tok.train_from_iterator(corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    tokenizer = NllbTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], model_max_length=77)
    tokenizer.save_pretrained(folder)
    M2M100Config(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=80,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, scale_embedding=True).save_pretrained(folder)
    vision = json.loads((ROOT / "tools/model_configs/clip-tiny.json").read_text())["vision_cfg"]
    text = {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_pooler_type": "cls_pooler",
            "hf_proj_type": "linear", "context_length": 77}
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}, "preprocess_cfg": OPENAI_PREPROCESS}))
    return f"local-dir:{folder}"


STAND_INS = {"unigram": unigram, "byte_fallback_bpe": byte_fallback_bpe}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", help=f"the fixtures to make, of {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--stand-in-tokenizer", nargs=2, metavar=("KIND", "DIR"), help=f"one of {sorted(STAND_INS)}")
    args = p.parse_args()
    if set(args.families) - set(FAMILIES):
        p.error(f"unknown families {sorted(set(args.families) - set(FAMILIES))}")
    if args.stand_in_tokenizer:
        kind, out = args.stand_in_tokenizer
        STAND_INS[kind](out)
        return
    texts = FIXTURES / "family_texts.json"
    for family in args.families or FAMILIES:
        how = FAMILIES[family]
        out = FIXTURES / "families" / family
        with tempfile.TemporaryDirectory() as scratch:
            extra = []
            if isinstance(how, str):
                model = globals()[how](scratch)
            else:
                model, stand_in = how
                if stand_in:
                    STAND_INS[stand_in](scratch)
                    extra = ["--tokenizer-dir", scratch]
            cmd = [sys.executable, str(ROOT / "tools/export_model.py"), "--model", model, "--random-seed", "0",
                   "--out", str(out), "--reference-texts", str(texts), "--reference-images", str(FIXTURES / "images")]
            subprocess.run(cmd + extra, check=True)


if __name__ == "__main__":
    main()
