#!/usr/bin/env python3
"""Export an open_clip model into a clip_search model directory.

A model directory holds:
  manifest.json   name, dimensions, preprocessing, logit scale, files with sha256 (checked at load)
  text.onnx       input_ids int64 [batch, tokens] -> text_embeds float32 [batch, dim] (not normalised)
  image.onnx      pixel_values float32 [batch, 3, size, size] -> image_embeds float32 [batch, dim] (not normalised)
  tokenizer.json  CLIP's BPE vocabulary and merges, Hugging Face format

Weights come from one of:
  --pretrained TAG      open_clip's pretrained tag, downloaded from the hub (e.g. ViT-B-32 laion2b_s34b_b79k)
  --checkpoint FILE     a local open_clip checkpoint (offline, air-gapped installs)
  --random-seed N       the real architecture with random weights from a fixed seed (tests and demos here)

--reference-texts/--reference-images also write reference.json: open_clip's own embeddings of those inputs,
computed by open_clip's tokenizer and preprocessing, for parity tests of the extension.
"""
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import open_clip
from open_clip.transformer import text_global_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_json import write_tokenizer_json  # noqa: E402

FORMAT_VERSION = 1
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


class TextTower(torch.nn.Module):
    """open_clip's CLIP.encode_text on the real token count instead of 77 padded positions.

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


def create_model(args):
    open_clip.add_model_config(CONFIG_DIR)
    if args.random_seed is not None:
        torch.manual_seed(args.random_seed)
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
        # open_clip initialises some parameters to constants (logit scale, layer norms); randomise the layer
        # norms too so that parity tests exercise every weight.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith((".weight", ".bias")) and p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
        source = f"random weights, seed {args.random_seed}"
    else:
        pretrained = args.checkpoint or args.pretrained
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=pretrained)
        source = f"checkpoint {os.path.basename(args.checkpoint)}" if args.checkpoint else f"pretrained {args.pretrained}"
    model.eval()
    if not isinstance(model, open_clip.CLIP):
        sys.exit(f"{args.model}: only open_clip CLIP models with the built-in text tower are supported "
                 f"(this is a {type(model).__name__})")
    if model.text_pool_type != "argmax":
        sys.exit(f"{args.model}: text pool type {model.text_pool_type!r} is not supported (argmax only)")
    return model, preprocess, source


def export_onnx(module, example, path, input_name, output_name, dynamic_shapes):
    torch.onnx.export(
        module, (example,), str(path), dynamo=True, input_names=[input_name], output_names=[output_name],
        dynamic_shapes={input_name: dynamic_shapes}, external_data=False, optimize=True, verbose=False,
    )


def check_onnx(path, example, expected, what):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    diff = float(np.abs(got - expected.numpy()).max())
    print(f"  {what}: ONNX Runtime vs torch max abs diff {diff:.2e}")
    if diff > 1e-3 * max(1.0, float(np.abs(expected.numpy()).max())):
        sys.exit(f"{what}: the exported graph disagrees with torch")


def export(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, preprocess, source = create_model(args)
    torch.backends.mha.set_fastpath_enabled(False)
    cfg = model.visual.preprocess_cfg
    context_length = model.context_length
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    tokenizer = open_clip.get_tokenizer(args.model)

    print(f"exporting {args.model} ({source}) to {out}")
    with torch.no_grad():
        text = TextTower(model).eval()
        ids = tokenizer(["a photo of a cat", "two dogs playing in the snow at night"])[:, :12]
        ids[:, -1] = tokenizer.eot_token_id
        batch = torch.export.Dim("batch", min=1, max=4096)
        tokens = torch.export.Dim("tokens", min=2, max=context_length)
        export_onnx(text, ids, out / "text.onnx", "input_ids", "text_embeds", {0: batch, 1: tokens})
        check_onnx(out / "text.onnx", ids, text(ids), "text tower")

        image = ImageTower(model).eval()
        pixels = torch.randn(2, 3, size, size)
        export_onnx(image, pixels, out / "image.onnx", "pixel_values", "image_embeds", {0: batch})
        check_onnx(out / "image.onnx", pixels, image(pixels), "image tower")

    write_tokenizer_json(tokenizer, out / "tokenizer.json")
    files = {role: {"path": name, "sha256": sha256(out / name)}
             for role, name in (("text", "text.onnx"), ("image", "image.onnx"), ("tokenizer", "tokenizer.json"))}
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": args.model,
        "weights": source,
        "embed_dim": int(model.text_projection.shape[1] if not isinstance(model.text_projection, torch.nn.Linear)
                         else model.text_projection.out_features),
        "context_length": int(context_length),
        "vocab_size": int(model.vocab_size),
        "sot_token_id": int(tokenizer.sot_token_id),
        "eot_token_id": int(tokenizer.eot_token_id),
        "image": {
            "size": int(size),
            "resize_mode": cfg.get("resize_mode", "shortest"),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
        },
        "logit_scale": model.logit_scale.exp().item(),
        "files": files,
    }
    if manifest["image"]["resize_mode"] != "shortest" or manifest["image"]["interpolation"] != "bicubic":
        sys.exit(f"{args.model}: preprocessing {manifest['image']} is not supported (shortest-side bicubic only)")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"  wrote {out}/manifest.json (dim {manifest['embed_dim']}, image {size}px)")

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
    texts = []
    if args.reference_texts:
        texts = json.loads(Path(args.reference_texts).read_text())
    images = sorted(p for p in Path(args.reference_images).iterdir() if p.is_file()) if args.reference_images else []
    with torch.no_grad():
        text_embeds = model.encode_text(tokenizer(texts), normalize=True).numpy() if texts else []
        image_embeds = []
        for path in images:
            pixels = preprocess(reference_image(path)).unsqueeze(0)
            image_embeds.append(model.encode_image(pixels, normalize=True)[0].numpy())
    reference = {
        "model": args.model,
        "note": "open_clip's own tokenizer, preprocessing and model (padded to the full context); images after "
                "EXIF orientation and 16-bit scaling, as clip_search does",
        "texts": [{"text": t, "embedding": [round(float(v), 7) for v in e]} for t, e in zip(texts, text_embeds)],
        "images": [{"file": p.name, "embedding": [round(float(v), 7) for v in e]} for p, e in zip(images, image_embeds)],
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    print(f"  wrote {out}/reference.json ({len(texts)} texts, {len(images)} images)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (or clip-tiny, the test model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", help="open_clip pretrained tag to download, e.g. laion2b_s34b_b79k")
    src.add_argument("--checkpoint", help="local checkpoint file")
    src.add_argument("--random-seed", type=int, help="random weights with this seed")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--reference-texts", help="JSON list of texts to write open_clip reference embeddings for")
    p.add_argument("--reference-images", help="folder of images to write open_clip reference embeddings for")
    export(p.parse_args())


if __name__ == "__main__":
    main()
