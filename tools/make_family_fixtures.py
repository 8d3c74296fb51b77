#!/usr/bin/env python3
"""Builds tests/fixtures/families/<family>/: a tiny model of each family besides OpenAI-vocabulary CLIP, exported by
tools/export_model.py with random weights, with open_clip's token ids, embeddings and classification
probabilities of tests/fixtures/family_texts.json and the fixture images (reference.json).

No hub is reachable, so the Hugging Face tokenizers are stand-ins trained here on the fixture texts with the
`tokenizers` package, of the kinds the real models use: a SentencePiece-style Unigram with `$A </s>` and pad = eos
(T5, SigLIP) and a byte-fallback BPE with pad 0 and `$A <eos>` (Gemma, SigLIP 2). open_clip loads them from a
local folder exactly as it loads the real ones (HFTokenizer, the config's cleaning). MobileCLIP uses OpenAI's BPE.

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
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures"
# fixture name: (tiny open_clip config in tools/model_configs, stand-in tokenizer or None for OpenAI's BPE)
FAMILIES = {
    "siglip": ("siglip-tiny", "unigram"),
    "siglip2": ("siglip2-tiny", "byte_fallback_bpe"),
    "mobileclip": ("mobileclip-tiny", None),
}


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


STAND_INS = {"unigram": unigram, "byte_fallback_bpe": byte_fallback_bpe}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stand-in-tokenizer", nargs=2, metavar=("KIND", "DIR"), help=f"one of {sorted(STAND_INS)}")
    args = p.parse_args()
    if args.stand_in_tokenizer:
        kind, out = args.stand_in_tokenizer
        STAND_INS[kind](out)
        return
    texts = FIXTURES / "family_texts.json"
    for family, (config, stand_in) in FAMILIES.items():
        out = FIXTURES / "families" / family
        with tempfile.TemporaryDirectory() as tokenizer_dir:
            cmd = [sys.executable, str(ROOT / "tools/export_model.py"), "--model", config, "--random-seed", "0",
                   "--out", str(out), "--reference-texts", str(texts), "--reference-images", str(FIXTURES / "images")]
            if stand_in:
                STAND_INS[stand_in](tokenizer_dir)
                cmd += ["--tokenizer-dir", tokenizer_dir]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
