"""Clustered random unit vectors for bench/scale.sh, written to stdout in PostgreSQL's binary COPY format as rows
(id bigint, embedding vector(DIM)).

    python bench/scale.py items N      # ids 1..N
    python bench/scale.py queries Q    # ids 1..Q, drawn from the same distribution, not among the items

The distribution: CENTROIDS random unit centroids (fixed by SEED); each vector is a centroid picked uniformly plus
gaussian noise (NOISE per coordinate), normalised. Items and queries use different random streams.
"""
import struct
import sys

import numpy as np

DIM = 512
CENTROIDS = 1000
NOISE = 0.03  # per coordinate: the noise's norm is about 0.03 * sqrt(512) = 0.68 of a centroid's
SEED = 20261201
CHUNK = 50_000


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    what, count = sys.argv[1], int(sys.argv[2])
    centroids = unit(np.random.default_rng(SEED).standard_normal((CENTROIDS, DIM)))
    rng = np.random.default_rng([SEED, {"items": 1, "queries": 2}[what]])
    # One binary COPY row: 2 fields; id as int8; vector as pgvector's binary form (int16 dim, int16 unused, float4s).
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (DIM,))])
    out = sys.stdout.buffer
    out.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        picked = centroids[rng.integers(0, CENTROIDS, n)]
        vectors = unit(picked + NOISE * rng.standard_normal((n, DIM)))
        rows = np.zeros(n, dtype=row)
        rows["fields"], rows["id_len"], rows["vec_len"], rows["dim"] = 2, 8, 4 + 4 * DIM, DIM
        rows["id"] = np.arange(start + 1, start + n + 1)
        rows["vec"] = vectors
        out.write(rows.tobytes())
    out.write(struct.pack(">h", -1))


if __name__ == "__main__":
    main()
