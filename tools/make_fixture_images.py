#!/usr/bin/env python3
"""Writes the image fixtures of the preprocessing tests and open_clip's reference crops.

Run with the project venv (torch, torchvision, open_clip 3.3.0, Pillow 13, scikit-image 0.26):

    .venv/bin/python tools/make_fixture_images.py

Fixtures (tests/fixtures/images/) are made from scikit-image's sample photos in several formats,
Pillow modes, sizes and aspect ratios. For each one the script runs open_clip's inference transform
(`open_clip.image_transform(224, is_train=False)` with OpenAI's mean/std: torchvision
`Resize(224, BICUBIC)`, `CenterCrop(224)`, `convert('RGB')`, `ToTensor`, `Normalize`) and writes:

* `reference/<fixture>.png`: the 224x224 RGB uint8 image just before `ToTensor`;
* `reference/summary.json`: per fixture its format, Pillow mode and size, how the Rust crop must
  compare (`exact`, or `approx` for lossy WebP), the mean of the normalised tensor, and, where
  clip_core decodes differently on purpose, an `expected` crop (`reference/<fixture>.expected.png`)
  made with the same open_clip transform from the image as clip_core decodes it, with a note.

The output is deterministic for fixed library versions.
"""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import open_clip
import skimage.data as skdata
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "images"
REF = OUT / "reference"
SIZE = 224

TRANSFORM = open_clip.image_transform(
    SIZE,
    is_train=False,
    mean=open_clip.OPENAI_DATASET_MEAN,
    std=open_clip.OPENAI_DATASET_STD,
)


# The other resize modes and filters of the model families, open_clip's transforms as well: squash (SigLIP) and
# bilinear at 256 px (MobileCLIP). Their crops are written for the fixtures compared exactly.
OTHER_TRANSFORMS = {
    "squash_bicubic_224": open_clip.image_transform(224, is_train=False, resize_mode="squash"),
    "shortest_bilinear_256": open_clip.image_transform(256, is_train=False, interpolation="bilinear"),
}


def crop_of(im: Image.Image, transform=TRANSFORM) -> Image.Image:
    size = transform.transforms[0].size
    for t in transform.transforms[:-2]:  # Resize, CenterCrop, MaybeConvertMode | MaybeToTensor, Normalize
        im = t(im)
    assert im.mode == "RGB" and im.size[0] == im.size[1] == (size if isinstance(size, int) else size[0]), \
        (im.mode, im.size)
    return im


def tensor_of(im: Image.Image) -> torch.Tensor:
    return TRANSFORM(im)


# --------------------------------------------------------------------------------------------
# Helpers


def write_png(path: Path, arr: np.ndarray, color_type: int, bit_depth: int) -> None:
    """Minimal PNG writer for what Pillow cannot save (16-bit RGB)."""
    h, w = arr.shape[:2]
    if bit_depth == 16:
        raw = arr.astype(">u2").tobytes()
        row = len(raw) // h
    else:
        raw = arr.astype(np.uint8).tobytes()
        row = len(raw) // h
    data = b"".join(b"\x00" + raw[y * row:(y + 1) * row] for y in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + tag + payload
                + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b""))


def gif_with_partial_first_frame(im: Image.Image, screen, offset, **kw) -> bytes:
    """Saves `im` as a GIF, then moves its first frame to `offset` on a larger logical screen."""
    buf = io.BytesIO()
    im.save(buf, "GIF", **kw)
    b = bytearray(buf.getvalue())
    b[6:10] = struct.pack("<HH", *screen)
    flags = b[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while b[i] == 0x21:  # extensions: skip their sub-blocks
        i += 2
        while b[i]:
            i += 1 + b[i]
        i += 1
    assert b[i] == 0x2C, "image descriptor"
    b[i + 1:i + 5] = struct.pack("<HH", *offset)
    return bytes(b)


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)())


def fit(im: Image.Image, size) -> Image.Image:
    return im.resize(size, Image.Resampling.LANCZOS)


def alpha_gradient(size, kind: str) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "radial":
        r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
        a = np.clip(1.3 - r, 0, 1)
    else:  # diagonal ramp with a fully transparent band and a fully opaque band
        a = np.clip((x / w + y / h) * 0.8 - 0.2, 0, 1)
    return Image.fromarray(np.round(a * 255).astype(np.uint8), "L")


# --------------------------------------------------------------------------------------------
# Fixtures: (file name, writer, compare, note). A writer saves the file and may return an
# "expected" PIL image that clip_core's decoding corresponds to (deliberate differences).


def fixtures():
    astronaut = photo("astronaut")
    chelsea = photo("chelsea")
    coffee = photo("coffee")
    rocket = photo("rocket")
    camera = photo("camera")
    moon = photo("moon")
    coins = photo("coins")
    logo = photo("logo")
    horse = photo("horse")

    def save(im, **kw):
        def w(path):
            im.save(path, **kw)
        return w

    def write_bytes(data):
        def w(path):
            path.write_bytes(data)
        return w

    def copy_file(src):
        return write_bytes(src.read_bytes())

    items = []

    # --- PNG
    items.append(("astronaut_rgb_posterized_300x250.png",
                  save(ImageOps.posterize(fit(astronaut, (300, 250)), 4), optimize=True),
                  "exact", "RGB PNG, landscape, downscaled (posterized to 4 bits to stay small)"))
    tall = ImageOps.posterize(fit(astronaut.crop((150, 0, 380, 512)), (230, 520)), 3)
    items.append(("astronaut_rgb_posterized_tall_230x520.png", save(tall, optimize=True),
                  "exact", "RGB PNG taller than twice its width, downscaled: Pillow runs the "
                           "vertical pass first"))
    items.append(("chelsea_rgb_200x133.png", save(fit(chelsea, (200, 133)), optimize=True),
                  "exact", "RGB PNG smaller than 224: upscaled"))
    items.append(("moon_l_512x512.png", save(moon, optimize=True),
                  "exact", "greyscale (L) PNG, square, downscaled"))
    rgba = fit(logo, (240, 240))
    items.append(("logo_rgba_240x240.png", save(rgba, optimize=True),
                  "exact", "RGBA PNG with transparent areas: premultiplied resize"))
    coffee_rgba = fit(coffee, (150, 100)).convert("RGBA")
    coffee_rgba.putalpha(alpha_gradient((150, 100), "ramp"))
    items.append(("coffee_rgba_alpha_ramp_150x100.png", save(coffee_rgba, optimize=True),
                  "exact", "RGBA PNG with an alpha ramp (0..255), upscaled"))
    coins_la = fit(coins, (200, 158)).convert("LA")
    coins_la.putalpha(alpha_gradient((200, 158), "radial"))
    items.append(("coins_la_radial_alpha_200x158.png", save(coins_la, optimize=True),
                  "exact", "grey+alpha (LA) PNG, upscaled premultiplied"))
    chelsea_p = chelsea.quantize(64, dither=Image.Dither.FLOYDSTEINBERG)
    items.append(("chelsea_p_trns_451x300.png",
                  save(chelsea_p, optimize=False, transparency=5),
                  "exact", "palette PNG with a transparent index (tRNS): NEAREST resize"))
    rocket_p = fit(rocket, (213, 320)).quantize(16)
    items.append(("rocket_p4bit_alpha_213x320.png",
                  save(rocket_p, bits=4, transparency=bytes([255, 128, 0] + [255] * 13)),
                  "exact", "4-bit palette PNG with per-entry alpha, portrait, upscaled NEAREST"))
    items.append(("horse_1bit_400x328.png", save(horse.convert("1")),
                  "exact", "1-bit PNG (mode '1'): NEAREST resize"))

    def rgb16(path):
        a = np.asarray(fit(astronaut, (120, 120))).astype(np.uint16)
        # High byte = the 8-bit photo; low byte varies (Pillow keeps only the high byte).
        write_png(path, a * 256 + (a * 7 % 256), color_type=2, bit_depth=16)
    items.append(("astronaut_rgb16_120x120.png", rgb16,
                  "exact", "16-bit RGB PNG: Pillow and clip_core both keep the high byte"))

    def gray16(path):
        a = np.asarray(fit(camera, (180, 180))).astype(np.uint16)
        write_png(path, a * 257, color_type=0, bit_depth=16)
        return Image.fromarray(a.astype(np.uint8), "L")
    items.append(("camera_gray16_180x180.png", gray16, "exact",
                  "16-bit greyscale PNG: Pillow opens it as I;16 and convert('RGB') clips values "
                  "above 255 (nearly all white); clip_core keeps the high byte on purpose, so the "
                  "Rust crop is compared with 'expected' (the transform applied to v >> 8)"))
    items.append(("tiny_rgb_1x1.png",
                  save(Image.new("RGB", (1, 1), (200, 30, 90))),
                  "exact", "1x1 pixel: extreme upscaling"))
    items.append(("coffee_rgb_3x500.png", save(fit(coffee, (3, 500))),
                  "exact", "3x500: short side 3, the resized image is 224x37333"))

    # --- JPEG
    items.append(("chelsea_rgb_451x300.jpg", save(chelsea, quality=85),
                  "exact", "baseline JPEG 4:2:0, downscaled"))
    items.append(("rocket_rgb_progressive_640x427.jpg", save(rocket, quality=75, progressive=True),
                  "exact", "progressive JPEG"))
    items.append(("camera_l_320x320.jpg", save(fit(camera, (320, 320)), quality=85),
                  "exact", "greyscale JPEG"))
    items.append(("coffee_cmyk_240x160.jpg", save(fit(coffee, (240, 160)).convert("CMYK"), quality=90),
                  "exact", "CMYK JPEG (Adobe, inverted): resized as CMYK, converted afterwards"))

    def exif6(path):
        im = fit(coffee, (300, 200))
        exif = Image.Exif()
        exif[0x0112] = 6
        im.save(path, quality=85, exif=exif.tobytes())
        return ImageOps.exif_transpose(Image.open(path))
    items.append(("coffee_exif_orientation6_300x200.jpg", exif6, "exact",
                  "JPEG stored 300x200 with EXIF orientation 6 (rotate 90 clockwise): open_clip "
                  "ignores the orientation, clip_core applies it on purpose, so the Rust crop is "
                  "compared with 'expected' (exif_transpose before the transform)"))

    # --- WebP
    items.append(("astronaut_lossless_posterized_300x250.webp",
                  save(ImageOps.posterize(fit(astronaut, (300, 250)), 4), lossless=True, method=6),
                  "exact", "lossless WebP, downscaled"))
    rgba_webp = fit(chelsea, (200, 133)).convert("RGBA")
    rgba_webp.putalpha(alpha_gradient((200, 133), "radial"))
    items.append(("chelsea_rgba_lossless_200x133.webp", save(rgba_webp, lossless=True, exact=True),
                  "exact", "lossless WebP with alpha (exact=True keeps colour under alpha 0)"))
    items.append(("coffee_lossy_300x200.webp", save(fit(coffee, (300, 200)), quality=80),
                  "approx", "lossy WebP (decoder differs from libwebp)"))

    # --- GIF
    chelsea_gif = fit(chelsea, (240, 160)).quantize(128)
    items.append(("chelsea_p_transparent_240x160.gif", save(chelsea_gif, transparency=3),
                  "exact", "GIF (mode P) with a transparent index: NEAREST resize"))
    partial = fit(chelsea, (80, 60)).quantize(64)
    items.append(("chelsea_p_partial_frame_120x90.gif",
                  write_bytes(gif_with_partial_first_frame(partial, (120, 90), (25, 10),
                                                           transparency=7)),
                  "exact", "GIF whose first frame (80x60 at 25,10) covers part of the screen: "
                           "the rest is the transparent index"))
    items.append(("camera_l_128x128.gif", save(fit(camera, (128, 128)), optimize=False),
                  "exact", "GIF of an L image: its palette is the grey ramp, so Pillow opens it "
                           "as L and resizes bicubic"))
    items.append(("no_time_for_that_tiny_14x25.gif",
                  copy_file(Path(skdata.__file__).parent / "no_time_for_that_tiny.gif"),
                  "exact", "animated GIF from scikit-image (first frame), 14x25"))

    # --- BMP
    items.append(("chelsea_rgb_150x100.bmp", save(fit(chelsea, (150, 100))),
                  "exact", "24-bit BMP"))
    items.append(("coins_p_200x158.bmp", save(fit(coins, (200, 158)).convert("RGB").quantize(32)),
                  "exact", "8-bit palette BMP (mode P): NEAREST resize"))

    items.append(("camera_l_100x100.bmp", save(fit(camera, (100, 100))),
                  "exact", "8-bit BMP with the grey-ramp palette: Pillow opens it as L (bicubic)"))
    bmp32 = fit(coffee, (100, 67)).convert("RGBA")
    bmp32.putalpha(alpha_gradient((100, 67), "ramp"))
    items.append(("coffee_rgba_bmp32_100x67.bmp", save(bmp32),
                  "exact", "32-bit BMP (BI_RGB) written from RGBA: Pillow reads it as RGB and "
                           "ignores the fourth byte"))

    # --- TIFF
    items.append(("horse_1bit_400x328.tiff", save(horse.convert("1")),
                  "exact", "bilevel TIFF (mode '1'): NEAREST resize"))
    items.append(("astronaut_rgb_lzw_128x128.tiff", save(fit(astronaut, (128, 128)), compression="tiff_lzw"),
                  "exact", "RGB TIFF, LZW"))
    return items


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    REF.mkdir(parents=True, exist_ok=True)
    for old in list(OUT.glob("*.*")) + list(REF.glob("*.*")):
        old.unlink()
    summary = []
    for name, writer, compare, note in fixtures():
        path = OUT / name
        expected_im = writer(path)
        im = Image.open(path)
        entry = {
            "file": name,
            "format": im.format,
            "pil_mode": im.mode,
            "width": im.size[0],
            "height": im.size[1],
            "bytes": path.stat().st_size,
            "compare": compare,
            "note": note,
        }
        crop = crop_of(Image.open(path))
        ref_name = name + ".png"
        crop.save(REF / ref_name, optimize=True)
        t = tensor_of(Image.open(path))
        # The crop is exactly what ToTensor sees.
        from_crop = (torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255
                     - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)) \
            / torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
        assert torch.equal(from_crop, t), name
        entry["reference"] = "reference/" + ref_name
        entry["tensor_mean"] = float(t.double().mean())
        entry["tensor_channel_means"] = [float(v) for v in t.double().mean(dim=(1, 2))]
        if compare == "exact" and expected_im is None:
            entry["other_transforms"] = {}
            for key, transform in OTHER_TRANSFORMS.items():
                other_name = f"{name}.{key}.png"
                crop_of(Image.open(path), transform).save(REF / other_name, optimize=True)
                entry["other_transforms"][key] = "reference/" + other_name
        if expected_im is not None:
            exp_crop = crop_of(expected_im)
            exp_name = name + ".expected.png"
            exp_crop.save(REF / exp_name, optimize=True)
            entry["expected"] = "reference/" + exp_name
            et = tensor_of(expected_im)
            entry["expected_tensor_mean"] = float(et.double().mean())
            entry["expected_width"], entry["expected_height"] = expected_im.size
            diff = np.abs(np.asarray(exp_crop, dtype=np.int16) - np.asarray(crop, dtype=np.int16))
            entry["reference_vs_expected_max_abs_diff"] = int(diff.max())
        summary.append(entry)
        print(f"{name:48s} {im.format:5s} {im.mode:5s} {im.size!s:12s} {entry['bytes']:7d} B")
    meta = {
        "generator": "tools/make_fixture_images.py",
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "pillow": Image.__version__,
        "transform": repr(TRANSFORM),
        "other_transforms": {key: repr(t) for key, t in OTHER_TRANSFORMS.items()},
        "image_size": SIZE,
        "fixtures": summary,
    }
    (REF / "summary.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.glob("*.*"))
    total_ref = sum(p.stat().st_size for p in REF.glob("*.*"))
    print(f"{len(summary)} fixtures, {total} bytes; references {total_ref} bytes")


if __name__ == "__main__":
    main()
