#!/usr/bin/env python3
"""Writes tests/fixtures/hostile/: damaged, hostile and odd image files, each small enough to commit, and
expected.json saying what each must give: "ok" (an embedding) or the error class clip_search must raise
(not_an_image, corrupt, too_large, unsupported). The files that are merely odd but legal (1x1, 10000x10,
animated, 16-bit, palette with transparency, CMYK, EXIF-rotated, TIFF) live in tests/fixtures/images.

    .venv/bin/python tools/make_hostile_corpus.py
"""
import io
import json
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hostile"
SOURCE = ROOT / "tests" / "fixtures" / "images" / "chelsea_rgb_200x133.png"


def encoded(fmt, **kwargs):
    img = Image.open(SOURCE).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # by PNG colour type: grey, RGB, grey+alpha, RGBA


def png_bomb(width, height, bit_depth=8, color_type=2):
    """A real PNG that declares width x height and inflates to rows of zeros (RGB at 8 bits by default) from a few
    KB per 10 MB of pixels."""
    raw_row = b"\x00" + b"\x00" * (width * PNG_CHANNELS[color_type] * bit_depth // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(raw_row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_declaring(width, height):
    """A valid JPEG whose SOF0 marker is rewritten to declare another size."""
    data = bytearray(encoded("JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_declaring(width, height):
    data = bytearray(encoded("GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def bitflipped(data, seed, flips=24):
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(16, len(out))  # keep the signature so the decoder, not the sniffer, meets the damage
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    files = {}

    def put(name, data, expect):
        (OUT / name).write_bytes(data)
        files[name] = expect

    formats = {"jpg": encoded("JPEG", quality=85), "png": encoded("PNG"), "webp": encoded("WEBP", quality=80),
               "gif": encoded("GIF")}
    for ext, data in formats.items():
        put(f"truncated_half.{ext}", data[: len(data) // 2], "corrupt")
        put(f"truncated_header.{ext}", data[:20], "corrupt")
        for seed in range(3):
            # Flipped bits may still decode (to a damaged picture) or fail: either is fine, a crash is not.
            put(f"bitflip_{seed}.{ext}", bitflipped(data, seed), "ok_or_error")
    put("zero_length.bin", b"", "empty")
    put("random_4k.bin", random.Random(7).randbytes(4096), "not_an_image")
    put("text.txt", b"hello, this is not an image\n" * 20, "not_an_image")
    put("png_declares_100000x100000.png", png_header_only(100000, 100000), "too_large")
    put("png_declares_2147483647x1.png", png_header_only(2**31 - 1, 1), "too_large")
    put("png_bomb_10000x10000.png", png_bomb(10000, 10000), "too_large")
    put("jpeg_declares_65000x65000.jpg", jpeg_declaring(65000, 65000), "too_large")
    put("gif_declares_65535x65535.gif", gif_declaring(65535, 65535), "too_large")
    put("png_huge_legal_6000x6000.png", png_bomb(6000, 6000), "ok")
    # Just under the default clip.max_image_pixels, at 16 bits per sample: 400 MB of RGBA16 pixels.
    put("png_huge_legal_rgba16_7071x7071.png", png_bomb(7071, 7071, bit_depth=16, color_type=6), "ok")
    put("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "unsupported")
    put("image.pdf", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n", "unsupported")
    put("image.heic", struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic", "unsupported")
    put("image.avif", struct.pack(">I", 24) + b"ftypavif" + b"\x00\x00\x00\x00avifmif1", "unsupported")
    (OUT / "expected.json").write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    total = sum((OUT / n).stat().st_size for n in files)
    print(f"wrote {len(files)} files, {total // 1024} KB, to {OUT}")


if __name__ == "__main__":
    main()
