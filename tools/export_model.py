#!/usr/bin/env python3
"""Export an open_clip model into a clip_search model directory.

A model directory holds (docs/models.md, "Model directory format"):
  manifest.json   name, dimension, how texts are tokenized and padded, image preprocessing, logit scale and bias,
                  files with sha256 (checked at load)
  text.onnx       input_ids int64 [batch, tokens] -> text_embeds float32 [batch, dim] (not normalised)
  image.onnx      pixel_values float32 [batch, 3, size, size] -> image_embeds float32 [batch, dim] (not normalised)
  tokenizer.json  OpenAI's BPE vocabulary and merges, or the Hugging Face tokenizer open_clip runs
  <tower>.onnx.data  the tower's weights, for towers over the 2 GB one ONNX file can hold (or --external-data)

Families: open_clip's CLIP (OpenAI vocabulary), SigLIP and SigLIP 2, MobileCLIP, and Hugging Face text towers
(XLM-RoBERTa, NLLB). A model whose config names a Hugging Face tokenizer reads it from the hub, or offline from
--tokenizer-dir; `local-dir:FOLDER` models (open_clip_config.json) work as open_clip loads them.

Weights come from one of:
  --pretrained TAG      open_clip's pretrained tag, downloaded from the hub (e.g. ViT-B-32 laion2b_s34b_b79k)
  --checkpoint FILE     a local open_clip checkpoint (offline, air-gapped installs)
  --random-seed N       the real architecture with random weights from a fixed seed (tests and demos here)
  --from-dir DIR        an fp32 model directory written by this script, converted to --precision (no torch needed)

--precision int8 writes towers whose MatMul/Gemm weights (and the text tower's token embedding table) are 8-bit,
by ONNX Runtime's dynamic quantisation: activations are quantised on the fly, weights have one scale per output
channel, and the recipe (INT8_RECIPES) computes the same on every x86 CPU, with or without VNNI. The files are
about 4x smaller and the model runs faster than fp32 (1.5x to 2.9x here, on AVX-512 VNNI), but its embeddings differ
slightly from open_clip's: scripts/bench.sh reports its speed and its cosine against fp32 on the CPU it runs on.
Same inputs, outputs and manifest format: clip_search loads either. The manifest's "weights" names the precision.

--reference-texts/--reference-images also write reference.json: open_clip's own token ids and embeddings of those
inputs, computed by open_clip's tokenizer and preprocessing, and its classification probabilities, for parity
tests of the extension.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import open_clip
from open_clip.hf_model import HFTextEncoder
from open_clip.tokenizer import HFTokenizer, _clean_canonicalize, _clean_lower, _clean_whitespace
from open_clip.transformer import text_global_pool
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402  (registers the tiny towers the test configs name)
from tokenizer_json import write_tokenizer_json  # noqa: E402

FORMAT_VERSION = 2
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
# open_clip's text cleaning functions by the name its configs and the manifest give them.
CLEAN_NAMES = {_clean_lower: "lower", _clean_whitespace: "whitespace", _clean_canonicalize: "canonicalize"}
# The largest graph kept in one file: protobuf's 2 GB, less a margin for what the graph adds to its weights.
INLINE_LIMIT = 2**31 - 2**26
ROLES = (("text", "text.onnx"), ("image", "image.onnx"), ("tokenizer", "tokenizer.json"))
# An int8 tower's embeddings against its fp32 graph's, on the export examples: below the first the graph is broken
# and is refused; below the second it works but misses the precision docs/operations.md gives, which is said.
INT8_MIN_COSINE, INT8_GOOD_COSINE = 0.99, 0.999
# How each tower is quantised (options of onnxruntime.quantization.quantize_dynamic). ONNX Runtime multiplies uint8
# activations by int8 weights on CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) with vpmaddubsw, which
# saturates a pair of products at 32767: plain int8 weights lost up to 2% of the image tower's cosine there. Both
# recipes cannot saturate: 7-bit int8 weights (|w| <= 64, and 2 x 255 x 64 < 32768), which keep VNNI's speed, for
# the image tower; uint8 weights (a kernel that widens to 16 bits) for the text tower, whose cosine 7-bit weights
# take below 0.999. Per-channel scales win back the precision; a model thus computes the same on every x86 CPU.
INT8_RECIPES = {
    "text": {"weight_type": "QUInt8", "per_channel": True},
    "image": {"weight_type": "QInt8", "per_channel": True, "reduce_range": True},
}


class TextTower(torch.nn.Module):
    """open_clip's CLIP.encode_text (OpenAI-style towers under a causal mask) on the real token count instead of 77
    padded positions.

    The positional embedding and the causal mask are sliced to the input length. Pooling at the end-of-text
    token under a causal mask makes this exact: positions after it never influence it.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        m = self.model
        n = input_ids.shape[1]
        x = m.token_embedding(input_ids)
        x = x + m.positional_embedding[:n]
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if isinstance(m.text_projection, torch.nn.Linear):
            return m.text_projection(x)
        return x @ m.text_projection


class EncodeTextTower(torch.nn.Module):
    """open_clip's encode_text as it is: for towers without a causal mask (SigLIP, MobileCLIP), which attend to every
    position and so take ids padded to the full context, and for Hugging Face encoders, which mask their pads."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.encode_text(input_ids)


class ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_image(pixel_values)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def family_preprocess(name):
    """The image preprocessing of a model's published weights (open_clip keeps it with the pretrained tags, not in
    the architecture's config), so that a random-weights export preprocesses as the real one. A tiny test model
    takes that of the model it stands for (tools/tiny_models.py)."""
    name = tiny_models.STANDS_FOR.get(name, name)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        return {}
    cfg = open_clip.get_pretrained_cfg(name, tags[0])
    return {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}


def create_model(args):
    open_clip.add_model_config(CONFIG_DIR)
    if args.random_seed is not None:
        torch.manual_seed(args.random_seed)
        pre = family_preprocess(args.model)
        model, _, preprocess = open_clip.create_model_and_transforms(
            args.model, pretrained=None, pretrained_text=False, image_mean=pre.get("mean"), image_std=pre.get("std"),
            image_interpolation=pre.get("interpolation"), image_resize_mode=pre.get("resize_mode"))
        # open_clip and timm initialise some parameters to constants (layer norms, biases) or near zero (timm's
        # layer scales at 1e-5, EVA's head at 1e-3 of its initialisation): randomise those too, so that parity
        # tests exercise every weight and the embeddings depend on the input (EVA's images all embedded as the
        # head's bias).
        with torch.no_grad():
            for name, p in model.named_parameters():
                if (name.endswith((".weight", ".bias")) and p.dim() == 1) or (p.numel() > 1 and p.std() < 1e-3):
                    p.add_(torch.randn_like(p) * 0.1)
        calibrate_batch_norms(model)
        source = f"random weights, seed {args.random_seed}"
    else:
        pretrained = args.checkpoint or args.pretrained
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=pretrained)
        source = f"checkpoint {os.path.basename(args.checkpoint)}" if args.checkpoint else f"pretrained {args.pretrained}"
    model.eval()
    text = model.text if isinstance(model, open_clip.CustomTextCLIP) else model
    if isinstance(text, HFTextEncoder):
        # A Hugging Face encoder masks its pad positions itself (attention mask = ids != pad id) and pools by
        # that mask or at the first token: padding to the longest text of a batch is exact.
        if type(text.pooler).__name__ not in ("MeanPooler", "ClsPooler"):
            sys.exit(f"{args.model}: pooler {type(text.pooler).__name__} is not supported")
    elif not isinstance(model, open_clip.CLIP) and not isinstance(text, open_clip.transformer.TextTransformer):
        sys.exit(f"{args.model}: text tower {type(text).__name__} is not supported")
    elif (text.text_pool_type if text is model else text.pool_type) not in ("argmax", "last", "eos"):
        sys.exit(f"{args.model}: text pool type is not supported")
    return model, preprocess, source


def calibrate_batch_norms(model):
    """Batch norms keep running statistics of 0 and 1 until trained: under random weights the activations then
    shrink block after block until biases decide the output (MobileCLIP's image tower embedded every image alike).
    Their statistics are measured on random images instead, as training would set them from data. (Only the image
    tower's: no text tower here has batch norms.)"""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
        norm.train()  # the batch norms only: dropout and the rest stay as at inference
    cfg = model.visual.preprocess_cfg
    size = image_size(model)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            model.encode_image((torch.rand(4, 3, size, size, generator=generator) - mean) / std)
    for norm in norms:
        norm.eval()


def image_size(model):
    size = model.visual.preprocess_cfg["size"]
    return size if isinstance(size, int) else size[0]


def make_tokenizer(args, model):
    """open_clip's tokenizer for the model; --tokenizer-dir gives a Hugging Face tokenizer from a local folder
    instead of the hub (with the cleaning and context length the model's config asks for)."""
    if not args.tokenizer_dir:
        return open_clip.get_tokenizer(args.model)
    text_cfg = open_clip.get_model_config(args.model)["text_cfg"]
    return HFTokenizer(args.tokenizer_dir, context_length=model.context_length,
                       **text_cfg.get("tokenizer_kwargs", {}))


def language_spec(hf):
    """NLLB's tokenizers mark a text's language with a code token placed by the post-processor's template
    (`<code> $A </s>`). The manifest keeps the codes, the default (open_clip's: the tokenizer's own) and the
    template with `{language}` for the code, so that the extension tokenizes any language as set_language would."""
    default = hf.src_lang
    post = json.loads(hf.backend_tokenizer.to_str())["post_processor"]
    if post.get("type") != "TemplateProcessing":
        sys.exit(f"a language tokenizer with a {post.get('type')} post-processor is not supported")
    template = []
    for item in post["single"]:
        if "Sequence" in item:
            template.append("$A")
        else:
            token = item["SpecialToken"]["id"]
            template.append("{language}" if token == default else token)
    codes = list(hf.extra_special_tokens)
    if template.count("{language}") != 1 or template.count("$A") != 1 or default not in codes:
        sys.exit(f"the language template {post['single']} is not understood")
    return {"default": default, "codes": codes, "template": template}


def text_spec(model, tokenizer, out):
    """How the extension turns a text into the text tower's input (the manifest's "text"), and the tokenizer.json
    it reads. OpenAI's BPE is re-implemented exactly by the extension; a Hugging Face tokenizer is written as the
    tokenizer that transformers built and open_clip runs, so that the extension runs the same pipeline whatever
    transformers would build from the same files another year."""
    causal = isinstance(model, open_clip.CLIP) and model.attn_mask is not None and model.text_pool_type == "argmax"
    hf_encoder = isinstance(getattr(model, "text", None), HFTextEncoder)
    # A Hugging Face tokenizer truncates to the config's context, which can be shorter than its encoder's positions.
    context = tokenizer.context_length if isinstance(tokenizer, HFTokenizer) else model.context_length
    spec = {"context_length": int(context), "vocab_size": int(model.vocab_size)}
    if isinstance(tokenizer, HFTokenizer):
        if tokenizer.tokenizer_mode or tokenizer.strip_sep_token:
            sys.exit("tokenizers with tokenizer_mode or strip_sep_token are not supported")
        hf = tokenizer.tokenizer
        if hf.padding_side != "right" or hf.truncation_side != "right" or hf.pad_token_id is None:
            sys.exit(f"the tokenizer pads on the {hf.padding_side} and truncates on the {hf.truncation_side} (pad id "
                     f"{hf.pad_token_id}): open_clip's models expect right padding with a pad id")
        backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        backend.save(str(out / "tokenizer.json"))
        if hf_encoder and hf.pad_token_id != model.text.config.pad_token_id:
            sys.exit(f"the tokenizer pads with {hf.pad_token_id}, the text tower masks {model.text.config.pad_token_id}")
        spec.update(tokenizer="huggingface", clean=CLEAN_NAMES[tokenizer.clean_fn], pad_id=int(hf.pad_token_id),
                    pad_to_context=not hf_encoder)
        if hasattr(tokenizer, "set_lang_fn"):
            spec["languages"] = language_spec(hf)
    else:
        if CLEAN_NAMES.get(tokenizer.clean_fn) != "lower":
            sys.exit("OpenAI's BPE is supported with open_clip's 'lower' cleaning only")
        write_tokenizer_json(tokenizer, out / "tokenizer.json")
        # Under a causal mask, pooled at the end token, padding changes nothing: the extension pads to the longest
        # text of a batch. Any other tower sees open_clip's zero padding up to the full context.
        spec.update(tokenizer="openai_bpe", clean="lower", pad_id=0, pad_to_context=not causal,
                    sot_token_id=int(tokenizer.sot_token_id), eot_token_id=int(tokenizer.eot_token_id))
    return spec


def export_onnx(module, example, path, input_name, output_name, dynamic_shapes, external):
    data_path(path).unlink(missing_ok=True)  # from an earlier export: store_weights must see torch's only
    torch.onnx.export(
        module, (example,), str(path), dynamo=True, input_names=[input_name], output_names=[output_name],
        dynamic_shapes={input_name: dynamic_shapes}, external_data=False, optimize=True, verbose=False,
    )
    store_weights(path, external)


def store_weights(path, external):
    """Puts a tower's weights where the model directory keeps them: inside its graph, or, with --external-data and
    for graphs near the 2 GB one ONNX file can hold (protobuf's limit), in one file beside it, `<graph>.data`
    (the manifest's `data`). torch writes the weights of a large graph (NLLB's text tower, 1.7 GB) to that same
    name whatever its external_data says; they are rewritten in any case so that the file holds this tower's
    weights only, from a known layout."""
    data = data_path(path)
    if not external and not data.exists():
        return
    import onnx
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    graph = onnx.load(str(path))
    data.unlink(missing_ok=True)
    if not external and size < INLINE_LIMIT:
        onnx.save_model(graph, str(path))
        return
    onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    print(f"  {path.name}: weights in {data.name} ({data.stat().st_size / 2**20:.0f} MB)")


def data_path(graph):
    return Path(f"{graph}.data")


def run_onnx(path, example):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: example})[0]


def check_onnx(path, example, expected, what):
    got = run_onnx(path, example.numpy())
    diff = float(np.abs(got - expected.numpy()).max())
    print(f"  {what}: ONNX Runtime vs torch max abs diff {diff:.2e}")
    if diff > 1e-3 * max(1.0, float(np.abs(expected.numpy()).max())):
        sys.exit(f"{what}: the exported graph disagrees with torch")


def quantize_int8(src, dst, tower, example, external):
    """ONNX Runtime's dynamic quantisation of one fp32 tower by its INT8_RECIPES entry: 8-bit weights for MatMul
    and Gemm, and for the text tower's token embedding (Gather); activations are quantised at run time. Checked
    against the fp32 graph on `example` by cosine, since int8 is approximate by design."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    recipe = dict(INT8_RECIPES[tower], weight_type=QuantType[INT8_RECIPES[tower]["weight_type"]])
    ops = ["MatMul", "Gemm"] + (["Gather"] if tower == "text" else [])
    data_path(dst).unlink(missing_ok=True)  # a data file from an earlier export must not stay beside dst
    # The quantiser writes its external data to `<dst>.data`, the name store_weights gives it.
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=ops, use_external_data_format=external, **recipe)
    a, b = run_onnx(src, example), run_onnx(dst, example)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"  {tower} tower int8: {os.path.getsize(dst) / 2**20:.0f} MB, min cosine vs fp32 {cos.min():.5f}")
    if cos.min() < INT8_MIN_COSINE:
        sys.exit(f"{tower} tower: the int8 graph disagrees with the fp32 one (cosine {cos.min():.4f})")
    if cos.min() < INT8_GOOD_COSINE:
        print(f"  note: below {INT8_GOOD_COSINE} on the export examples; compare both precisions on your own data")


EXAMPLE_TEXTS = ["a photo of a cat", "two dogs playing in the snow at night"]


def example_inputs(ids, spec, size):
    """The inputs the towers are exported and checked with: two texts (their open_clip ids, cut to 12 tokens where
    the extension does not pad to the context), two random images."""
    if not spec["pad_to_context"]:
        ids = ids[:, :12].clone()
        if spec["tokenizer"] == "openai_bpe":
            ids[:, -1] = spec["eot_token_id"]
    return ids, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def stored_example_ids(model_dir, spec):
    """EXAMPLE_TEXTS' ids by a model directory's own tokenizer, without the model (texts that need no cleaning)."""
    if spec["tokenizer"] == "openai_bpe":
        return open_clip.tokenize(EXAMPLE_TEXTS, context_length=spec["context_length"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(spec["context_length"])
    tokenizer.enable_padding(pad_id=spec["pad_id"], length=spec["context_length"])
    return torch.tensor([e.ids for e in tokenizer.encode_batch(EXAMPLE_TEXTS)])


def manifest_text_spec(manifest):
    """The "text" of a manifest; format 1 kept its few fields at the top (OpenAI BPE, padded to the longest)."""
    if manifest["format_version"] >= 2:
        return manifest["text"]
    return {"context_length": manifest["context_length"], "tokenizer": "openai_bpe", "pad_to_context": False,
            "eot_token_id": manifest["eot_token_id"]}


def write_manifest(out, manifest):
    manifest["files"] = {role: {"path": name, "sha256": sha256(out / name)} for role, name in ROLES}
    for role, name in ROLES[:2]:  # the towers
        data = data_path(out / name)
        if data.exists():
            data.chmod((out / name).stat().st_mode & 0o777)  # onnx creates it private; the server must read it
            manifest["files"][role]["data"] = {"path": data.name, "sha256": sha256(data)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"  wrote {out}/manifest.json (dim {manifest['embed_dim']}, image {manifest['image']['size']}px, "
          f"weights: {manifest['weights']})")


def convert(args):
    """--from-dir: an existing fp32 model directory to another precision, without torch or the checkpoint."""
    src, out = Path(args.from_dir), Path(args.out)
    manifest = json.loads((src / "manifest.json").read_text())
    if "int8" in manifest["weights"]:
        sys.exit(f"{src} is already int8")
    if src.resolve() == out.resolve():
        sys.exit("--out must differ from --from-dir")
    out.mkdir(parents=True, exist_ok=True)
    print(f"converting {src} ({manifest['weights']}) to {args.precision} in {out}")
    spec = manifest_text_spec(manifest)
    ids, pixels = example_inputs(stored_example_ids(src, spec), spec, manifest["image"]["size"])
    for tower, example in (("text", ids.numpy()), ("image", pixels.numpy())):
        quantize_int8(src / f"{tower}.onnx", out / f"{tower}.onnx", tower, example, args.external_data)
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    if (src / "reference.json").exists():  # open_clip's own embeddings: int8 parity can be checked against them
        shutil.copyfile(src / "reference.json", out / "reference.json")
    manifest["weights"] += f", {args.precision}"
    write_manifest(out, manifest)


def export(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, preprocess, source = create_model(args)
    torch.backends.mha.set_fastpath_enabled(False)
    cfg = model.visual.preprocess_cfg
    size = image_size(model)
    tokenizer = make_tokenizer(args, model)
    spec = text_spec(model, tokenizer, out)

    print(f"exporting {args.model} ({source}, {args.precision}) to {out}")
    # fp32 graphs go straight into the model directory; an int8 export quantises them from a scratch folder.
    with tempfile.TemporaryDirectory(dir=out) as scratch, torch.no_grad():
        graphs = out if args.precision == "fp32" else Path(scratch)
        ids, pixels = example_inputs(tokenizer(EXAMPLE_TEXTS), spec, size)
        batch = torch.export.Dim("batch", min=1, max=4096)
        tokens = torch.export.Dim("tokens", min=2, max=spec["context_length"])
        if spec["pad_to_context"]:
            text, text_dims = EncodeTextTower(model).eval(), {0: batch}
        elif spec["tokenizer"] == "huggingface":
            text, text_dims = EncodeTextTower(model).eval(), {0: batch, 1: tokens}
        else:
            text, text_dims = TextTower(model).eval(), {0: batch, 1: tokens}
        export_onnx(text, ids, graphs / "text.onnx", "input_ids", "text_embeds", text_dims, args.external_data)
        check_onnx(graphs / "text.onnx", ids, text(ids), "text tower")

        image = ImageTower(model).eval()
        export_onnx(image, pixels, graphs / "image.onnx", "pixel_values", "image_embeds", {0: batch},
                    args.external_data)
        check_onnx(graphs / "image.onnx", pixels, image(pixels), "image tower")

        if args.precision == "int8":
            for tower, example in (("text", ids.numpy()), ("image", pixels.numpy())):
                quantize_int8(graphs / f"{tower}.onnx", out / f"{tower}.onnx", tower, example, args.external_data)

    embed_dim = image(pixels).shape[1]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": args.model.removeprefix("local-dir:").rstrip("/").rsplit("/", 1)[-1],
        "weights": source if args.precision == "fp32" else f"{source}, {args.precision}",
        "embed_dim": int(embed_dim),
        "text": spec,
        "image": {
            "size": int(size),
            "resize_mode": cfg.get("resize_mode", "shortest"),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
        },
        "logit_scale": model.logit_scale.exp().item(),
        # Sigmoid models (SigLIP) score a pair as sigmoid(logit_scale * cosine + logit_bias).
        "logit_bias": None if model.logit_bias is None else model.logit_bias.item(),
    }
    if manifest["image"]["resize_mode"] not in ("shortest", "squash"):
        sys.exit(f"{args.model}: resize mode {manifest['image']['resize_mode']!r} is not supported")
    write_manifest(out, manifest)

    if args.reference_texts or args.reference_images:
        write_reference(args, model, preprocess, tokenizer, out)


def reference_image(path):
    """Opens an image as the extension sees it: open_clip ignores EXIF orientation and clips 16-bit grey values;
    clip_search applies the orientation and keeps the high byte of 16-bit samples (as Pillow itself does for
    16-bit colour), on purpose. Everything else is untouched."""
    from PIL import Image, ImageOps
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    return img


def write_reference(args, model, preprocess, tokenizer, out):
    reference = compute_reference(args, model, preprocess, tokenizer)
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    print(f"  wrote {out}/reference.json ({len(reference['texts'])} texts, {len(reference['images'])} images)")


def compute_reference(args, model, preprocess, tokenizer):
    """open_clip's token ids and embeddings of --reference-texts and --reference-images (reference.json's content);
    tools/immich_models.py computes its references with it too."""
    texts = []
    if args.reference_texts:
        texts = json.loads(Path(args.reference_texts).read_text())
    images = sorted(p for p in Path(args.reference_images).iterdir() if p.is_file()) if args.reference_images else []
    ids = tokenizer(texts) if texts else None
    with torch.no_grad():
        text_embeds = model.encode_text(ids, normalize=True).numpy() if texts else []
        image_embeds = []
        for path in images:
            pixels = preprocess(reference_image(path)).unsqueeze(0)
            image_embeds.append(model.encode_image(pixels, normalize=True)[0].numpy())
        # open_clip's logits of every image against the first five texts, as clip_classify turns them into
        # probabilities: a softmax over the labels, or each label's own sigmoid for sigmoid models.
        scores = []
        if texts and images:
            logits = model.logit_scale.exp() * torch.tensor(np.stack(image_embeds)) @ torch.tensor(text_embeds[:5]).T
            if model.logit_bias is not None:
                scores = torch.sigmoid(logits + model.logit_bias).tolist()
            else:
                scores = logits.softmax(dim=1).tolist()
    # Language tokenizers (NLLB): the first five texts again, marked as French. open_clip's set_language has no
    # effect with transformers 5 (its tokenizer puts back the code of `src_lang` at each call), so the language is
    # set as transformers expects it, through `src_lang`.
    languages = {}
    if texts and hasattr(tokenizer, "set_lang_fn"):
        hf = tokenizer.tokenizer
        default, hf.src_lang = hf.src_lang, "fra_Latn"
        french = tokenizer(texts[:5])
        hf.src_lang = default
        with torch.no_grad():
            embeds = model.encode_text(french, normalize=True).numpy()
        languages["fra_Latn"] = [{"text": t, "ids": row.tolist(), "embedding": [round(float(v), 7) for v in e]}
                                 for t, row, e in zip(texts, french, embeds)]
    reference = {
        "model": args.model,
        "note": "open_clip's own tokenizer, preprocessing and model (padded to the full context); images after "
                "EXIF orientation and 16-bit scaling, as clip_search does",
        "texts": [{"text": t, "ids": row.tolist(), "embedding": [round(float(v), 7) for v in e]}
                  for t, row, e in zip(texts, ids if texts else [], text_embeds)],
        "images": [{"file": p.name, "embedding": [round(float(v), 7) for v in e]} for p, e in zip(images, image_embeds)],
        "classify": {"labels": texts[:5], "probabilities": scores},
        "languages": languages,
    }
    return reference


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (or clip-tiny, the test model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", help="open_clip pretrained tag to download, e.g. laion2b_s34b_b79k")
    src.add_argument("--checkpoint", help="local checkpoint file")
    src.add_argument("--random-seed", type=int, help="random weights with this seed")
    src.add_argument("--from-dir", help="an fp32 model directory to convert to --precision")
    p.add_argument("--tokenizer-dir", help="a Hugging Face tokenizer folder to use instead of the hub's (offline "
                   "export of SigLIP and other models whose config names a Hugging Face tokenizer)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 (default, open_clip's numbers) or int8 (dynamic quantisation: smaller, faster, approximate)")
    p.add_argument("--external-data", action="store_true",
                   help="write each tower's weights to a file beside its graph (<tower>.onnx.data); fp32 towers over "
                   "the 2 GB one ONNX file can hold get one in any case")
    p.add_argument("--reference-texts", help="JSON list of texts to write open_clip reference embeddings for")
    p.add_argument("--reference-images", help="folder of images to write open_clip reference embeddings for")
    args = p.parse_args()
    if args.from_dir:
        if args.precision == "fp32":
            p.error("--from-dir converts to another precision: give --precision int8")
        if args.reference_texts or args.reference_images:
            p.error("--from-dir has no torch model to compute references with (its reference.json is copied)")
        convert(args)
    else:
        export(args)


if __name__ == "__main__":
    main()
