#!/usr/bin/env python3
"""The peers of scripts/bench.sh: the same work as the SQL side, outside the database, in one process.

  --engine open_clip     open_clip 3.3.0 on PyTorch: the reference implementation
  --engine onnxruntime   Python onnxruntime on the model directory's own ONNX files, with open_clip's
                         preprocessing and tokenizer (texts cut at their end token, as clip_search runs them)

Prints one JSON object: load time, process RSS, image throughput (one image per call, and batches), text latencies
per call, and the embeddings of the photos and texts (for the cosine checks). Run by bench/bench.py; each engine
runs in a process of its own so that its memory figures are its own.
"""
import argparse
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def rss_mb():
    """VmRSS, RssAnon and VmHWM of this process, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


def normalised(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).tolist()


def seed_of(manifest):
    m = re.match(r"random weights, seed (\d+)", manifest["weights"])
    if not m:
        sys.exit(f"the benchmark rebuilds the reference from a seed; this model's weights are {manifest['weights']!r}")
    return int(m.group(1))


class OpenClip:
    """open_clip on PyTorch, loaded from a checkpoint of the same weights as the ONNX files (made once)."""

    def __init__(self, manifest, threads, checkpoint):
        import torch
        import open_clip
        from export_model import CONFIG_DIR, create_model
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        open_clip.add_model_config(CONFIG_DIR)
        self.torch = torch
        if not Path(checkpoint).exists():  # the exporter's own model: same seed, same weights
            args = argparse.Namespace(model=manifest["name"], random_seed=seed_of(manifest), pretrained=None,
                                      checkpoint=None)
            model, _, _ = create_model(args)
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), checkpoint)
            del model
        self.rss_before = rss_mb()
        t0 = time.perf_counter()
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(manifest["name"], pretrained=checkpoint)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(manifest["name"])
        self.load_s = time.perf_counter() - t0
        self.rss = {}

    def first_text(self, text):
        t0 = time.perf_counter()
        self.texts([text])
        return self.load_s + time.perf_counter() - t0

    def texts(self, texts):
        with self.torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts)).numpy()

    def images(self, blobs):
        from PIL import Image
        with self.torch.inference_mode():
            pixels = self.torch.stack([self.preprocess(Image.open(io.BytesIO(b))) for b in blobs])
            return self.model.encode_image(pixels).numpy()


class OnnxRuntime:
    """Python onnxruntime on the model directory's files; sessions made like clip_search's (threads, no spinning)."""

    def __init__(self, manifest, threads, model_dir):
        import onnxruntime as ort
        import open_clip
        from export_model import CONFIG_DIR
        open_clip.add_model_config(CONFIG_DIR)
        spec = manifest["image"]  # open_clip's eval transform, built without building a torch model
        self.preprocess = open_clip.image_transform(spec["size"], is_train=False, mean=tuple(spec["mean"]),
                                                    std=tuple(spec["std"]), resize_mode=spec["resize_mode"],
                                                    interpolation=spec["interpolation"])
        self.tokenizer = open_clip.get_tokenizer(manifest["name"])
        self.ort, self.dir, self.threads = ort, Path(model_dir), threads
        self.sessions, self.rss, self.load_s = {}, {}, 0.0
        self.rss_before = rss_mb()

    def session(self, tower):
        if tower not in self.sessions:
            so = self.ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = self.threads, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            t0 = time.perf_counter()
            self.sessions[tower] = self.ort.InferenceSession(str(self.dir / f"{tower}.onnx"), so,
                                                             providers=["CPUExecutionProvider"])
            self.load_s += time.perf_counter() - t0
            self.rss[tower] = rss_mb()
        return self.sessions[tower]

    def first_text(self, text):
        t0 = time.perf_counter()
        self.texts([text])
        return time.perf_counter() - t0

    def texts(self, texts):
        ids = self.tokenizer(texts).numpy()
        width = int((ids != 0).sum(1).max())  # the longest text's end token: the rest is padding
        return self.session("text").run(None, {"input_ids": ids[:, :width]})[0]

    def images(self, blobs):
        from PIL import Image
        pixels = np.stack([self.preprocess(Image.open(io.BytesIO(b))).numpy() for b in blobs])
        return self.session("image").run(None, {"pixel_values": pixels})[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("open_clip", "onnxruntime"), required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--photos", required=True, help="folder of photos")
    p.add_argument("--texts", required=True, help="JSON with 'short' and 'long' lists")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the texts")
    p.add_argument("--copies", type=int, default=2, help="each photo this many times in the image runs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--checkpoint", help="open_clip: state dict of the model's weights (written when missing)")
    args = p.parse_args()

    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    texts = json.loads(Path(args.texts).read_text())
    photos = sorted(f for f in Path(args.photos).iterdir() if f.is_file())
    blobs = [f.read_bytes() for f in photos]
    if args.engine == "open_clip":
        engine = OpenClip(manifest, args.threads, args.checkpoint)
    else:
        engine = OnnxRuntime(manifest, args.threads, args.model_dir)
    out = {"engine": args.engine, "threads": args.threads, "rss_before_model": engine.rss_before}

    # Text first, as a search-only client would: load (and the first call), then latencies per query.
    out["first_call_ms"] = engine.first_text("a photo of a cat") * 1000
    out["rss_text"] = engine.rss.get("text") or rss_mb()
    for kind in ("short", "long"):
        engine.texts(texts[kind][:1])  # an untimed pass per input shape, as on the SQL side
        for t in texts[kind]:
            engine.texts([t])
        ms = []
        for _ in range(args.rounds):
            for t in texts[kind]:
                t0 = time.perf_counter()
                engine.texts([t])
                ms.append((time.perf_counter() - t0) * 1000)
        out[f"text_{kind}_ms"] = ms
    out["text_embeddings"] = normalised(engine.texts(texts["short"] + texts["long"]))

    work = blobs * args.copies
    engine.images(blobs[:1])
    t0 = time.perf_counter()
    for b in work:
        engine.images([b])
    out["image_rows_per_s"] = len(work) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(work), args.batch):
        engine.images(work[i:i + args.batch])
    out["image_batch_per_s"] = len(work) / (time.perf_counter() - t0)
    out["image_embeddings"] = dict(zip((f.name for f in photos), normalised(engine.images(blobs))))
    out["rss_both"] = rss_mb()
    out["load_s"] = engine.load_s
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
