"""Write an open_clip `SimpleTokenizer` as a Hugging Face style tokenizer.json.

    from tokenizer_json import write_tokenizer_json
    write_tokenizer_json(open_clip.get_tokenizer("ViT-B-32"), "tokenizer.json")

The file holds a BPE model with the tokenizer's full vocabulary (`encoder`), its merges in rank
order, the end-of-word suffix '</w>' and its special tokens ('<start_of_text>', '<end_of_text>'
and any additional ones) as added tokens. The normalizer / pre_tokenizer / post_processor /
decoder fields describe CLIP's pipeline as far as the Hugging Face schema can: NFC, whitespace
collapsing and lower-casing, the CLIP split pattern, byte-level mapping, `[sot] ... [eot]`.
open_clip's cleaning also runs ftfy and `html.unescape`, which the schema cannot express; the Rust
reader (`clip_core::tokenizer::ClipTokenizer`) only uses `model` and `added_tokens` and implements
open_clip's full cleaning itself.

Run as a script to write the default ViT-B-32 tokenizer:

    python tools/tokenizer_json.py OUT.json
"""

import json
import os
import sys

CLIP_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _merges_in_rank_order(tokenizer):
    merges = sorted(tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])
    for i, (pair, rank) in enumerate(merges):
        if rank != i:
            raise ValueError(f"merge ranks are not 0..n-1 (rank {rank} at position {i})")
        if len(pair) != 2 or any((" " in p) or not p for p in pair):
            raise ValueError(f"merge {pair!r} cannot be written as 'a b'")
    return [f"{a} {b}" for (a, b), _ in merges]


def tokenizer_json_dict(tokenizer):
    """The tokenizer.json content of an open_clip SimpleTokenizer, as a dict."""
    encoder = dict(tokenizer.encoder)
    ids = sorted(encoder.values())
    if ids != list(range(len(ids))):
        raise ValueError("vocabulary ids are not 0..n-1")
    sot = tokenizer.decoder[tokenizer.sot_token_id]
    eot = tokenizer.decoder[tokenizer.eot_token_id]
    special_ids = list(tokenizer.all_special_ids)
    added_tokens = [
        {
            "id": int(i),
            "content": tokenizer.decoder[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i in special_ids
    ]
    special_alternatives = "|".join(
        "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in tokenizer.decoder[i]) for i in special_ids
    )
    return {
        "version": "1.0",
        "truncation": {
            "direction": "Right",
            "max_length": int(tokenizer.context_length),
            "strategy": "LongestFirst",
            "stride": 0,
        },
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Strip", "strip_left": True, "strip_right": True},
                {"type": "Lowercase"},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": special_alternatives + "|" + CLIP_SPLIT_PATTERN},
                    "behavior": "Removed",
                    "invert": True,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": sot, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eot, "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": sot, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eot, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": eot, "type_id": 1}},
            ],
            "special_tokens": {
                sot: {"id": sot, "ids": [int(tokenizer.sot_token_id)], "tokens": [sot]},
                eot: {"id": eot, "ids": [int(tokenizer.eot_token_id)], "tokens": [eot]},
            },
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
                {"type": "Strip", "content": " ", "start": 0, "stop": 1},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: int(i) for tok, i in sorted(encoder.items(), key=lambda kv: kv[1])},
            "merges": _merges_in_rank_order(tokenizer),
        },
    }


def write_tokenizer_json(tokenizer, path):
    """Write `tokenizer` (an open_clip SimpleTokenizer) as a Hugging Face style tokenizer.json at `path`."""
    data = tokenizer_json_dict(tokenizer)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    import open_clip

    out = sys.argv[1] if len(sys.argv) > 1 else "tokenizer.json"
    write_tokenizer_json(open_clip.get_tokenizer("ViT-B-32"), out)
    print("wrote", out)
