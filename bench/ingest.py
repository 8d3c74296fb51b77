#!/usr/bin/env python3
"""The photos and the reference of bench/ingest.sh.

  make       phone-size JPEGs made from real photos: each of the demo's photos (scikit-image's) scaled to cover
             4032x3024 (a 12 MP phone picture), cropped at a place of its own and mirrored every other time, so that
             no two are alike; quality 90, 4:2:0 as phones write them
  reference  open_clip's own pipeline on those files: a torch DataLoader whose worker processes open, decode and
             preprocess the photos (open_clip's eval transform) while the model embeds batches; prints one JSON
             object with the images/s and writes the embeddings (for the cosine against clip_search's)
  decode     Pillow's decoding and resizing of those files to a 224x224 crop (open_clip's Resize and CenterCrop),
             whole and after draft(), which decodes at a reduced DCT scale; prints the median milliseconds as JSON
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import OpenClip  # noqa: E402  (bench/peers.py: open_clip from the same weights as the ONNX files)

PHONE = (4032, 3024)


def make(args):
    from PIL import Image, ImageOps
    sources = sorted(p for p in Path(args.photos).iterdir() if p.is_file())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        path = out / f"phone-{i:05d}.jpg"
        if path.exists():
            continue
        image = Image.open(sources[i % len(sources)]).convert("RGB")
        scale = max(PHONE[0] / image.width, PHONE[1] / image.height) * (1 + (i // len(sources)) % 7 * 0.05)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        left = (image.width - PHONE[0]) * ((i * 37) % 101) // 100
        top = (image.height - PHONE[1]) * ((i * 53) % 101) // 100
        image = image.crop((left, top, left + PHONE[0], top + PHONE[1]))
        if i % 2:
            image = ImageOps.mirror(image)
        image.save(path.with_suffix(".tmp"), "JPEG", quality=90, subsampling="4:2:0")
        path.with_suffix(".tmp").rename(path)


class Photos:
    """The photos as a torch Dataset: each item is one file opened, decoded and preprocessed by open_clip."""

    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.paths[i]) as image:
            return self.preprocess(image)


def reference(args):
    import torch
    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    model = OpenClip(manifest, args.threads, args.checkpoint)
    paths = sorted(str(p) for p in Path(args.photos).glob("phone-*.jpg"))[: args.count]
    loader = torch.utils.data.DataLoader(Photos(paths, model.preprocess), batch_size=args.batch_size,
                                         num_workers=args.loader_workers, persistent_workers=False)
    embeddings = []
    started = time.perf_counter()
    with torch.inference_mode():
        for pixels in loader:
            embeddings.append(model.model.encode_image(pixels).numpy())
    seconds = time.perf_counter() - started
    np.save(args.embeddings, np.concatenate(embeddings))
    print(json.dumps({"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
                      "threads": args.threads, "loader_workers": args.loader_workers}))


def decode(args):
    from PIL import Image
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize
    resize, crop = Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224)
    paths = sorted(str(p) for p in Path(args.photos).glob("phone-*.jpg"))[: args.count]
    times = {"pillow_ms": [], "pillow_draft_ms": []}
    for _ in range(args.rounds):
        for path in paths:
            for key, draft in (("pillow_ms", False), ("pillow_draft_ms", True)):
                started = time.perf_counter()
                with Image.open(path) as image:
                    if draft:
                        image.draft("RGB", (224, 224))
                    crop(resize(image.convert("RGB")))
                times[key].append((time.perf_counter() - started) * 1e3)
    print(json.dumps({key: round(float(np.median(v)), 1) for key, v in times.items()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--photos", required=True, help="folder of the real photos")
    m.add_argument("--out", required=True)
    m.add_argument("--count", type=int, required=True)
    r = sub.add_parser("reference")
    r.add_argument("--model-dir", required=True)
    r.add_argument("--checkpoint", required=True, help="open_clip state dict of the same weights (made when missing)")
    r.add_argument("--photos", required=True, help="folder of the phone-size photos")
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    r.add_argument("--loader-workers", type=int, required=True, help="the DataLoader's worker processes")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--embeddings", required=True, help=".npy file for the embeddings, in the photos' order")
    d = sub.add_parser("decode")
    d.add_argument("--photos", required=True, help="folder of the phone-size photos")
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--rounds", type=int, required=True)
    args = p.parse_args()
    {"make": make, "reference": reference, "decode": decode}[args.command](args)


if __name__ == "__main__":
    main()
