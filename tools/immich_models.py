#!/usr/bin/env python3
"""Tiny CLIP-family models with random weights, exported as Immich publishes its models, with open_clip's references.

For each family, tests/fixtures/immich/<family>/:
  model/config.json                open_clip.get_model_config(name), as Immich's exporter writes it
  model/visual/preprocess_cfg.json open_clip.get_model_preprocess_cfg(model)
  model/visual/model.onnx          model.encode_image(image, normalize=True): input "image" float32 [1, 3, S, S]
  model/textual/model.onnx         model.encode_text(text, normalize=True): input "text" int32 [1, context]
  model/textual/tokenizer*.json ...  transformers' AutoTokenizer of the config's hf_tokenizer_name (or
                                   "openai/clip-vit-base-patch32" for OpenAI's BPE), save_pretrained
  reference.json                   open_clip's token ids and normalised embeddings of tests/fixtures/family_texts.json
                                   (NLLB: some texts again in another language) and of the fixture images (open_clip's
                                   eval preprocessing), with the context length, embedding size and image settings

This is the layout of the Hugging Face repositories immich-app/<open_clip name>__<pretrained> written by Immich's
exporter (immich-app/ml-models): the legacy TorchScript exporter of the torch it pins (2.6), opset 19, static
shapes (batch 1), output "embedding" for both towers. `clip-legacy` is clip-tiny exported as Immich's older models
were: opset 17, a dynamic batch axis ("batch_size", on the inputs), outputs "image_embedding" / "text_embedding".

The models are those of tools/family_models.py (seed 0, tools/export_model.py's create_model): clip-tiny,
siglip2-tiny, mobileclip-tiny and the local-dir: XLM-RoBERTa and NLLB towers, whose stand-in tokenizers are trained
here. No hub is reachable: "openai/clip-vit-base-patch32" is built as transformers' CLIPTokenizerFast from open_clip's
own BPE (vocab.json, merges.txt), with Hugging Face's names of the special tokens (<|startoftext|> 49406,
<|endoftext|> 49407, which is also its pad token); the Hugging Face families' tokenizers are loaded with
AutoTokenizer from the stand-in folders. In config.json the local folders that stand for hub names (the stand-in
tokenizer, the local-dir: text towers) read "stand-in: tools/family_models.py", so that the files do not depend on a
temporary path. Each graph is then run by onnxruntime on open_clip's own ids (int32, one row at a time) and pixels,
and compared with open_clip's embeddings.

Run from the repository root with the venv of scripts/setup.sh --python:
  .venv/bin/python tools/immich_models.py [FAMILY...]     (default: all of clip, siglip2, mobileclip, xlm-roberta,
                                                           nllb, clip-legacy)
  .venv/bin/python tools/immich_models.py full MODEL OUT  a published architecture at full size (ViT-B-32,
                                                           ViT-B-16-SigLIP2, nllb-clip-base-siglip, MobileCLIP2-S2,
                                                           ...) with random weights, as its hub repository's files
                                                           in OUT, for scripts/bench.sh --immich; no reference.json
Weights are the same at every run (seeded); the stand-in tokenizers' trainers are not deterministic, so the
Hugging Face families' vocabularies (and token ids) can differ from one run to the next (see family_models.py).
A full-size model whose config names a Hugging Face tokenizer (SigLIP 2, NLLB, ...) gets the same stand-in
tokenizer as its family's fixture, not the model's vocabulary (no hub is reachable), and says so: its graphs and
their speed are the real architecture's (the text graph's width is the config's context, whatever the vocabulary),
and its size is the real one's less the difference between the two tokenizers' files (tens of MB for Gemma's and
NLLB's). OpenAI's BPE is the real one.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_model  # noqa: E402
import family_models  # noqa: E402
from tokenizer_json import _merges_in_rank_order  # noqa: E402

FIXTURES = family_models.FIXTURES
OUT = FIXTURES / "immich"
# family: (family_models.FAMILIES entry, or a tools/model_configs name for CLIP itself; how it is exported)
FAMILIES = {
    "clip": ("clip-tiny", "hub"),
    "siglip2": ("siglip2", "hub"),
    "mobileclip": ("mobileclip", "hub"),
    "xlm-roberta": ("xlm-roberta", "hub"),
    "nllb": ("nllb", "hub"),
    "clip-legacy": ("clip-tiny", "legacy"),
}
# How Immich's exporter writes the towers: the published models (ml-models, torch 2.6's TorchScript exporter) and
# the older ones (the monorepo's export/, torch.jit.trace then export with a dynamic batch on the input).
EXPORTS = {
    "hub": {"opset": 19, "outputs": {"image": "embedding", "text": "embedding"}, "dynamic_batch": False},
    "legacy": {"opset": 17, "outputs": {"image": "image_embedding", "text": "text_embedding"}, "dynamic_batch": True},
}
OPENAI_TOKENIZER = "openai/clip-vit-base-patch32"
STAND_IN = "stand-in: tools/family_models.py"
SEED = 0


class Encoder(torch.nn.Module):
    """One tower of an open_clip model as Immich exports it: encode_image / encode_text with normalize=True."""

    def __init__(self, model, tower):
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, x):
        encode = self.model.encode_image if self.tower == "image" else self.model.encode_text
        return encode(x, normalize=True)


def openai_clip_tokenizer(scratch, simple):
    """transformers' CLIPTokenizerFast of "openai/clip-vit-base-patch32", built offline from open_clip's
    SimpleTokenizer `simple`: its vocabulary and merges as vocab.json and merges.txt (the hub's slow files) with
    Hugging Face's names of the start and end tokens, and the hub's tokenizer_config.json settings."""
    from transformers import AutoTokenizer
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): int(i) for token, i in simple.encoder.items()}
    folder = Path(scratch) / "clip-vit-base-patch32"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_merges_in_rank_order(simple)) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
        "add_prefix_space": False, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == "CLIPTokenizer", type(tokenizer)  # CLIPTokenizerFast in transformers 5
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    return tokenizer


def stable_config(config, scratch):
    """config.json's content, the scratch folder of a local-dir: model's tower and tokenizer named as a stand-in."""
    text_cfg = config["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if str(text_cfg.get(key, "")).startswith(str(scratch)):
            text_cfg[key] = STAND_IN
    return config


def export_tower(model, tower, example, path, export):
    """torch.onnx.export of one tower as Immich's exporter does: TorchScript exporter, input "image" or "text",
    static shapes (or a dynamic batch named "batch_size" on the input, as the older exports)."""
    dynamic_axes = {tower: {0: "batch_size"}} if export["dynamic_batch"] else None
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Encoder(model, tower).eval(), (example,), str(path), dynamo=False,
                      input_names=[tower], output_names=[export["outputs"][tower]], opset_version=export["opset"],
                      dynamic_axes=dynamic_axes)


def random_model(name, tokenizer_dir):
    """open_clip's model `name` with random weights (seed 0, tools/export_model.py's create_model), frozen, its eval
    preprocessing and tokenizer, and the arguments compute_reference takes (the fixture texts and images)."""
    args = SimpleNamespace(model=name, random_seed=SEED, pretrained=None, checkpoint=None, tokenizer_dir=tokenizer_dir,
                           reference_texts=str(FIXTURES / "family_texts.json"),
                           reference_images=str(FIXTURES / "images"))
    model, preprocess, source_note = export_model.create_model(args)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.backends.mha.set_fastpath_enabled(False)
    return args, model, preprocess, export_model.make_tokenizer(args, model), source_note


def export_layout(name, model, tokenizer, tokenizer_dir, folder, export, scratch):
    """Writes `folder` as Immich's exporter writes a repository (config.json, visual/, textual/); returns the
    Hugging Face tokenizer it saved and the config."""
    hf_name = open_clip.get_model_config(name)["text_cfg"].get("hf_tokenizer_name")
    config = stable_config(open_clip.get_model_config(name), scratch)
    size = config["vision_cfg"]["image_size"]
    context = config["text_cfg"].get("context_length", 77)
    (folder / "visual").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "visual/preprocess_cfg.json").write_text(
        json.dumps(open_clip.get_model_preprocess_cfg(model)))

    if hf_name is None:
        hf = openai_clip_tokenizer(scratch, tokenizer)
    else:  # the stand-in folder, or a local-dir: model's own
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(tokenizer_dir or hf_name)
    hf.save_pretrained(folder / "textual")

    torch.manual_seed(SEED)
    with torch.no_grad():
        export_tower(model, "image", torch.randn(1, 3, size, size), folder / "visual/model.onnx", export)
        export_tower(model, "text", torch.ones(1, context, dtype=torch.int32), folder / "textual/model.onnx", export)
    return hf, config


def make_family(family, scratch):
    source, how = FAMILIES[family]
    export = EXPORTS[how]
    if source in family_models.FAMILIES:
        name, tokenizer_dir = family_models.family_model(source, scratch)
    else:
        name, tokenizer_dir = source, None
    args, model, preprocess, tokenizer, source_note = random_model(name, tokenizer_dir)

    out = OUT / family
    folder = out / "model"
    print(f"{family}: {name.rsplit('/', 1)[-1]} ({source_note}), {how} export, to {folder}")
    hf, config = export_layout(name, model, tokenizer, tokenizer_dir, folder, export, scratch)

    with torch.no_grad():
        reference = export_model.compute_reference(args, model, preprocess, tokenizer)
    reference["model"] = name.removeprefix("local-dir:").rstrip("/").rsplit("/", 1)[-1]
    reference["note"] += "; tokens are the textual graph's input as int32 rows [1, context_length]"
    reference.update(
        context_length=int(config["text_cfg"].get("context_length", 77)),
        embed_dim=len(reference["images"][0]["embedding"]), image_size=int(config["vision_cfg"]["image_size"]),
        resize_mode=model.visual.preprocess_cfg.get("resize_mode", "shortest"),
        interpolation=model.visual.preprocess_cfg.get("interpolation", "bicubic"),
        export={"opset": export["opset"], "inputs": {"image": "image", "text": "text"}, "outputs": export["outputs"],
                "dynamic_batch": export["dynamic_batch"]})
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    check(folder, reference, preprocess)
    open_clip_pad = 0 if config["text_cfg"].get("hf_tokenizer_name") is None else hf.pad_token_id
    compare_hf_ids(folder, reference, hf, open_clip_pad)


def make_full(architecture, out, scratch):
    """A published architecture (tools/family_models.py's full_size_model) with random weights, exported to `out`
    as Immich's hub repositories are, for scripts/bench.sh; its graphs are checked against open_clip on the fixture
    texts and images, as the fixtures' are."""
    name, tokenizer_dir = family_models.full_size_model(architecture, scratch)
    args, model, preprocess, tokenizer, source_note = random_model(name, tokenizer_dir)
    print(f"{architecture} ({source_note}), hub export, to {out}")
    _, config = export_layout(name, model, tokenizer, tokenizer_dir, Path(out), EXPORTS["hub"], scratch)
    if config["text_cfg"].get("hf_tokenizer_name"):
        print("  textual/: a STAND-IN tokenizer (tools/family_models.py), not the model's vocabulary; the graph's "
              f"width is the config's context ({config['text_cfg'].get('context_length', 77)}), as the real one's")
    with torch.no_grad():
        reference = export_model.compute_reference(args, model, preprocess, tokenizer)
    check(Path(out), reference, preprocess)


def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check(folder, reference, preprocess):
    """Runs both graphs with onnxruntime on open_clip's inputs and prints their signatures and the lowest cosine
    against open_clip's embeddings; exits when one is below 0.9999."""
    import onnx
    import onnxruntime as ort
    for tower in ("textual", "visual"):
        path = folder / tower / "model.onnx"
        graph = onnx.load(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        io = [(v.name, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
               [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
              for v in list(graph.graph.input) + list(graph.graph.output)]
        opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
        inp = session.get_inputs()[0].name
        if tower == "textual":
            rows = [t["ids"] for t in reference["texts"]]
            rows += [t["ids"] for lang in reference["languages"].values() for t in lang]
            expected = [t["embedding"] for t in reference["texts"]]
            expected += [t["embedding"] for lang in reference["languages"].values() for t in lang]
            got = [session.run(None, {inp: np.array([r], dtype=np.int32)})[0][0] for r in rows]
        else:
            files = [FIXTURES / "images" / i["file"] for i in reference["images"]]
            expected = [i["embedding"] for i in reference["images"]]
            got = [session.run(None, {inp: preprocess(export_model.reference_image(f)).unsqueeze(0).numpy()})[0][0]
                   for f in files]
        low = float(cosines(got, expected).min())
        print(f"  {tower}: opset {opset}, {io}, {path.stat().st_size} bytes; ORT vs open_clip min cosine {low:.7f} "
              f"over {len(got)}")
        if low < 0.9999:
            sys.exit(f"{folder}/{tower}: the graph disagrees with open_clip")


def compare_hf_ids(folder, reference, hf, open_clip_pad):
    """How far the saved tokenizer.json, padded and cut to the context as a Hugging Face pipeline would pad it (with
    tokenizer_config.json's pad token), is from open_clip's ids (information only: open_clip cleans texts first)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(folder / "textual/tokenizer.json"))
    n = reference["context_length"]
    tok.enable_truncation(n)
    rows = [(t["text"], t["ids"]) for t in reference["texts"]]
    unpadded = [text for text, ids in rows if tok.encode(text).ids != strip(ids, open_clip_pad)]
    tok.enable_padding(length=n, pad_id=hf.pad_token_id, pad_token=hf.pad_token)
    differ = [text for text, ids in rows if tok.encode(text).ids != ids]
    # What the padding alone changes: the textual graph on the Hugging Face rows of the texts whose tokens agree.
    import onnxruntime as ort
    session = ort.InferenceSession(str(folder / "textual/model.onnx"), providers=["CPUExecutionProvider"])
    same = [t for t in reference["texts"] if t["text"] not in unpadded]
    got = [session.run(None, {"text": np.array([tok.encode(t["text"]).ids], dtype=np.int32)})[0][0] for t in same]
    low = float(cosines(got, [t["embedding"] for t in same]).min())
    print(f"  tokenizer.json (pad {hf.pad_token!r} = {hf.pad_token_id}) vs open_clip ids: {len(differ)}/{len(rows)} "
          f"rows differ, {len(unpadded)} without the padding {unpadded[:4]}; padded as tokenizer.json pads, the "
          f"others embed at min cosine {low:.7f}")


def strip(ids, pad):
    """ids less their trailing padding."""
    ids = list(ids)
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sys.argv[1:2] == ["full"]:  # a word the family list cannot hold, so that `[FAMILY...]` keeps its meaning
        p.add_argument("full")
        p.add_argument("model", help="an open_clip model name (ViT-B-32, ViT-B-16-SigLIP2, nllb-clip-base-siglip, ...)")
        p.add_argument("out", help="the folder to write, as a hub repository's files")
        args = p.parse_args()
        with tempfile.TemporaryDirectory() as scratch:
            make_full(args.model, args.out, scratch)
        return
    p.add_argument("families", nargs="*", help=f"of {', '.join(FAMILIES)} (default: all)")
    args = p.parse_args()
    if set(args.families) - set(FAMILIES):
        p.error(f"unknown families {sorted(set(args.families) - set(FAMILIES))}")
    for family in args.families or FAMILIES:
        with tempfile.TemporaryDirectory() as scratch:
            make_family(family, scratch)


if __name__ == "__main__":
    main()
