#!/usr/bin/env python3
"""Models of the families besides OpenAI-vocabulary CLIP, with random weights and without the hub.

  fixtures [FAMILY...]   tests/fixtures/families/<family>/: a tiny model of each family, exported by
                         tools/export_model.py, with open_clip's token ids, embeddings and classification
                         probabilities of tests/fixtures/family_texts.json and the fixture images (reference.json)
  export MODEL OUT [...] a full-size open_clip model (the real architecture) for scripts/parity.sh and
                         scripts/bench.sh, the rest of the command line going to tools/export_model.py

No hub is reachable, so the Hugging Face tokenizers are stand-ins trained here on the fixture texts with the
`tokenizers` package, of the kinds the real models use: a SentencePiece-style Unigram with `$A </s>` and pad = eos
(T5, SigLIP), a byte-fallback BPE with pad 0 and `$A <eos>` (Gemma, SigLIP 2) and a Unigram with `<s> $A </s>`
and pad 1 (XLM-RoBERTa). open_clip loads them from a local folder exactly as it loads the real ones (HFTokenizer,
the config's cleaning); NLLB's is transformers' NllbTokenizer over a BPE trained here. MobileCLIP uses OpenAI's
BPE. The XLM-RoBERTa and NLLB text towers are transformers' own model classes from local configs (open_clip's
`local-dir:` models).

Run from the repository root with the venv of scripts/setup.sh --python: .venv/bin/python tools/family_models.py
The trainers are not deterministic: fixtures made again differ in their stand-in vocabularies (and so in the
expected output of tests that show token ids), not in what the tests check.
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


def trained_unigram(specials):
    """A SentencePiece-style Unigram tokenizer trained on corpus(): NFKC, repeated spaces folded, Metaspace."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(vocab_size=1000, special_tokens=specials,
                                                              unk_token="<unk>", max_piece_length=12))
    return tok


def unigram(out):
    """T5's shape: a Unigram with `</s>` appended; pad = eos."""
    tok = trained_unigram(["<pad>", "</s>", "<unk>"])
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
    """XLM-RoBERTa's shape: a Unigram with `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3; `<s> $A </s>`; no lower-casing.
    Returns the vocabulary's size."""
    tok = trained_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>", model_max_length=77).save_pretrained(out)
    return tok.get_vocab_size()


def nllb_bpe(out):
    """transformers' NllbTokenizer (language codes as special tokens, `<code> $A </s>`, pad 1) over a BPE trained
    here. Returns the vocabulary's size, codes included."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], limit_alphabet=300)
    tok.train_from_iterator(corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    tokenizer = NllbTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], model_max_length=77)
    tokenizer.save_pretrained(out)
    return len(tokenizer)


# The Hugging Face text towers: their transformers config class, stand-in tokenizer, and encoder at full sizes (the
# values of the hub's config.json of xlm-roberta-base, xlm-roberta-large and facebook/nllb-200-distilled-600M, which
# no hub serves here) and tiny (the test fixtures).
HF_TOWERS = {
    "xlm-roberta": (XLMRobertaConfig, xlm_roberta_unigram, {
        "full": dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5),
        "large": dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5),
        "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=79)}),
    "nllb": (M2M100Config, nllb_bpe, {
        "full": dict(vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                     decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                     max_position_embeddings=1024, scale_embedding=True, activation_function="relu"),
        "tiny": dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=80,
                     scale_embedding=True)}),
}
# open_clip models whose text tower is one of HF_TOWERS, for full-size exports: the tower and its size.
HF_TOWER_OF = {"xlm-roberta-base-ViT-B-32": ("xlm-roberta", "full"),
               "xlm-roberta-large-ViT-H-14": ("xlm-roberta", "large"),
               "nllb-clip-base": ("nllb", "full"), "nllb-clip-base-siglip": ("nllb", "full")}


def hf_tower_model(root, name, tower, size, model_cfg, preprocess_cfg):
    """A local-dir: open_clip model named `name` whose text tower is transformers' own class of `tower` at `size`
    with a stand-in tokenizer (open_clip reads both from the folder), the rest as `model_cfg` says."""
    config_class, make_tokenizer, sizes = HF_TOWERS[tower]
    folder = Path(root) / name
    folder.mkdir()
    vocab = make_tokenizer(folder)
    encoder = dict(sizes[size])
    encoder["vocab_size"] = max(vocab, encoder.get("vocab_size", 0))
    config_class(pad_token_id=1, bos_token_id=0, eos_token_id=2, **encoder).save_pretrained(folder)
    model_cfg = json.loads(json.dumps(model_cfg))
    model_cfg["text_cfg"].update(hf_model_name=str(folder), hf_tokenizer_name=str(folder))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    return f"local-dir:{folder}"


def tiny_hf_tower_model(root, tower, pooler, proj):
    """A tiny local-dir: model of a Hugging Face text tower with open_clip's ViT (as clip-tiny's)."""
    vision = json.loads((ROOT / "tools/model_configs/clip-tiny.json").read_text())["vision_cfg"]
    text = {"hf_pooler_type": pooler, "hf_proj_type": proj, "context_length": 77}
    return hf_tower_model(root, f"{tower}-tiny", tower, "tiny", {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text},
                          OPENAI_PREPROCESS)


def xlm_roberta_model(root):
    """xlm-roberta-base-ViT-B-32's shape: mean pooling over the non-pad tokens, an MLP projection."""
    return tiny_hf_tower_model(root, "xlm-roberta", "mean_pooler", "mlp")


def nllb_model(root):
    """nllb-clip-base's shape: pooled at the first token, which is the text's language code; a linear projection."""
    return tiny_hf_tower_model(root, "nllb", "cls_pooler", "linear")


STAND_INS = {"unigram": unigram, "byte_fallback_bpe": byte_fallback_bpe}


def family_model(family, scratch):
    """The tiny model of a FAMILIES entry, made in folder `scratch`: its open_clip name (a tools/model_configs config
    or a local-dir: model) and the folder of its stand-in Hugging Face tokenizer (None where open_clip finds the
    tokenizer itself: OpenAI's BPE, or a local-dir: model's own)."""
    how = FAMILIES[family]
    if isinstance(how, str):
        return globals()[how](scratch), None
    model, stand_in = how
    if not stand_in:
        return model, None
    STAND_INS[stand_in](scratch)
    return model, scratch


def make_fixtures(families):
    texts = FIXTURES / "family_texts.json"
    for family in families or FAMILIES:
        out = FIXTURES / "families" / family
        with tempfile.TemporaryDirectory() as scratch:
            model, tokenizer_dir = family_model(family, scratch)
            extra = ["--tokenizer-dir", tokenizer_dir] if tokenizer_dir else []
            cmd = [sys.executable, str(ROOT / "tools/export_model.py"), "--model", model, "--random-seed", "0",
                   "--out", str(out), "--reference-texts", str(texts), "--reference-images", str(FIXTURES / "images")]
            subprocess.run(cmd + extra, check=True)


def full_size_model(model, scratch):
    """A published architecture without the hub, made in folder `scratch`: its open_clip name (the model itself, or
    a local-dir: model whose Hugging Face text tower is built from its known config) and the folder of its stand-in
    tokenizer where the model's config names a Hugging Face one (None otherwise), as family_model returns them."""
    import open_clip
    if model in HF_TOWER_OF:
        tag = open_clip.list_pretrained_tags_by_model(model)[0]
        pre = {k: v for k, v in open_clip.get_pretrained_cfg(model, tag).items()
               if k in ("mean", "std", "interpolation", "resize_mode")}
        tower, size = HF_TOWER_OF[model]
        return hf_tower_model(scratch, model, tower, size, open_clip.get_model_config(model), pre), None
    if not open_clip.get_model_config(model)["text_cfg"].get("hf_tokenizer_name"):
        return model, None
    STAND_INS["byte_fallback_bpe" if "SigLIP2" in model else "unigram"](scratch)
    return model, scratch


def export_full_size(model, out, export_args):
    """A random-weights export of a published architecture without the hub (full_size_model)."""
    with tempfile.TemporaryDirectory() as scratch:
        name, tokenizer_dir = full_size_model(model, scratch)
        extra = ["--tokenizer-dir", tokenizer_dir] if tokenizer_dir else []
        cmd = [sys.executable, str(ROOT / "tools/export_model.py"), "--model", name, "--random-seed", "0",
               "--out", str(out)]
        subprocess.run(cmd + extra + export_args, check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    fixtures = sub.add_parser("fixtures", help="the tiny test models in tests/fixtures/families")
    fixtures.add_argument("families", nargs="*", help=f"of {', '.join(FAMILIES)} (default: all)")
    full = sub.add_parser("export", help="a full-size model with random weights, offline")
    full.add_argument("model", help="an open_clip model name (ViT-B-16-SigLIP, xlm-roberta-base-ViT-B-32, ...)")
    full.add_argument("out")
    full.add_argument("export_args", nargs=argparse.REMAINDER, help="more options of tools/export_model.py")
    args = p.parse_args()
    if args.command == "fixtures":
        if set(args.families) - set(FAMILIES):
            p.error(f"unknown families {sorted(set(args.families) - set(FAMILIES))}")
        make_fixtures(args.families)
    else:
        export_full_size(args.model, args.out, args.export_args)


if __name__ == "__main__":
    main()
