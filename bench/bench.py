#!/usr/bin/env python3
"""Driver of scripts/bench.sh: clip_search through SQL against its peers, in one run, on one machine.

Same photos, same texts, same weights, same thread count everywhere. The SQL side runs in the cluster that PGHOST
and PGPORT name, in a database of its own; every SQL time is taken inside the backend. The peers (bench/peers.py)
run as separate processes. Prints one table and, with --report, writes it as Markdown with the machine described.
"""
import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DB = "clip_bench"


def psql(sql=None, *, file=None, db=DB, settings=None, variables=None):
    """Runs SQL in a fresh backend; returns the JSON objects it printed (one per line), merged."""
    cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db]
    for k, v in (variables or {}).items():
        cmd += ["-v", f"{k}={v}"]
    if file:
        cmd += ["-f", str(file)]
    env = dict(os.environ)
    if settings:
        env["PGOPTIONS"] = " ".join(f"-c {k}={str(v).replace(' ', chr(92) + ' ')}" for k, v in settings.items())
    r = subprocess.run(cmd, input=sql, text=True, capture_output=True, env=env)
    if r.returncode:
        sys.exit(f"psql failed:\n{r.stderr}")
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def setup_database(args, texts):
    """The benchmark database: the extension (re-created, so its functions are the installed build's), helpers,
    the photos (each `copies` times) and the texts."""
    if not psql(f"SELECT json_build_object('exists', true) FROM pg_database WHERE datname = {quote(DB)}", db="postgres"):
        psql(f"CREATE DATABASE {DB}", db="postgres")
    names = sorted(f.name for f in Path(args.photos).iterdir() if f.is_file())
    rows = ",\n".join(f"({quote(kind)}, {n}, {quote(t)})" for kind in ("short", "long") for n, t in enumerate(texts[kind]))
    psql(f"""
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS clip_search CASCADE;
CREATE EXTENSION clip_search CASCADE;
\\i {BENCH / 'functions.sql'}
DROP TABLE IF EXISTS bench.photos, bench.texts;
CREATE TABLE bench.photos (id serial, name text, copy int, image bytea);
INSERT INTO bench.photos (name, copy, image)
SELECT name, c, pg_read_binary_file({quote(str(Path(args.photos).resolve()))} || '/' || name)
FROM unnest(ARRAY[{', '.join(quote(n) for n in names)}]) name, generate_series(1, {args.copies}) c ORDER BY c, name;
CREATE TABLE bench.texts (kind text, n int, t text);
INSERT INTO bench.texts VALUES {rows};
""")
    return names


SQL_TEXT_SESSION = """
SELECT json_build_object('rss_start', bench.rss());
SELECT json_build_object('first_call_ms', (bench.time_texts(ARRAY['a photo of a cat'], 1))[1]);
SELECT json_build_object('rss_text', bench.rss());
SELECT json_build_object('warm', cardinality(bench.time_texts(ARRAY(SELECT t FROM bench.texts), 1)));
SELECT json_build_object('text_short_ms', bench.time_texts(ARRAY(SELECT t FROM bench.texts WHERE kind = 'short' ORDER BY n), :rounds));
SELECT json_build_object('text_long_ms', bench.time_texts(ARRAY(SELECT t FROM bench.texts WHERE kind = 'long' ORDER BY n), :rounds));
SELECT json_build_object('rss_text_after', bench.rss());
SELECT json_build_object('text_embeddings', json_agg(clip_embed_text(t)::text::json ORDER BY kind DESC, n)) FROM bench.texts;
SELECT json_build_object('info', clip_info());
"""

SQL_IMAGE_SESSION = """
SELECT json_build_object('first_image_ms', bench.time_image(:'photo'));
SELECT json_build_object('rss_image', bench.rss());
SELECT bench.image_throughput();
SELECT json_build_object('rss_image_after', bench.rss());
SELECT json_build_object('image_embeddings', json_object_agg(name, clip_embed_image(image)::text::json))
FROM bench.photos WHERE copy = 1;
SELECT json_build_object('warm', cardinality(bench.time_texts(ARRAY(SELECT t FROM bench.texts), 1)));
SELECT json_build_object('rss_both', bench.rss());
"""


def run_sql(args, model_dir, photo):
    settings = {"clip.model_dir": Path(model_dir).resolve(), "clip.intra_op_threads": args.threads,
                "clip.batch_size": args.batch, "max_parallel_workers_per_gather": 0}
    out = psql(SQL_TEXT_SESSION, settings=settings, variables={"rounds": args.rounds})
    out.update(psql(SQL_IMAGE_SESSION, settings=settings, variables={"photo": photo}))
    return out


def run_peer(args, engine):
    cmd = [sys.executable, str(BENCH / "peers.py"), "--engine", engine, "--model-dir", args.model_dir,
           "--photos", args.photos, "--texts", args.texts, "--threads", str(args.threads),
           "--rounds", str(args.rounds), "--copies", str(args.copies), "--batch", str(args.batch),
           "--checkpoint", args.checkpoint]
    r = subprocess.run(cmd, text=True, capture_output=True)
    if r.returncode:
        sys.exit(f"{engine} peer failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def run_hnsw(args, dim):
    return psql(file=BENCH / "hnsw.sql", variables={
        "rows": args.hnsw_rows, "queries": args.hnsw_queries, "dim": dim, "m": 16, "ef_construction": 64,
        "workers": args.threads - 1, "ef_list": "{" + ",".join(str(e) for e in args.ef_search) + "}"})


# --- statistics -------------------------------------------------------------------------------------------------

def pct(values, q):
    """Percentile by linear interpolation (as numpy's default)."""
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (k - lo)


def cosines(a, b):
    """Cosines of matching rows of two lists (or dicts) of vectors."""
    if isinstance(a, dict):
        a, b = [a[k] for k in sorted(a)], [b[k] for k in sorted(a)]
    out = []
    for x, y in zip(a, b, strict=True):
        dot = sum(p * q for p, q in zip(x, y))
        nx, ny = sum(p * p for p in x) ** 0.5, sum(q * q for q in y) ** 0.5
        out.append(dot / (nx * ny))
    return out


def summarise(r):
    """The figures of one side (SQL or a peer) that the table shows."""
    s = {
        "image_rows_per_s": r.get("image_rows_per_s"),
        "image_batch_per_s": r.get("image_batch_per_s"),
        "short_p50": pct(r["text_short_ms"], 0.5), "short_p95": pct(r["text_short_ms"], 0.95),
        "long_p50": pct(r["text_long_ms"], 0.5), "long_p95": pct(r["text_long_ms"], 0.95),
        "first_call_ms": r["first_call_ms"],
    }
    s["short_vs_long"] = s["long_p50"] / s["short_p50"]
    # Memory the model added to the process: over a fresh backend's for SQL, over the interpreter's with its
    # imports (torch alone is several hundred MB) for the peers. SQL: after each backend's workload.
    if "rss_start" in r:
        base = r["rss_start"]["VmRSS"]
        s["rss_text"] = r["rss_text_after"]["VmRSS"] - base
        s["rss_image"] = r["rss_image_after"]["VmRSS"] - base
    else:
        base = r["rss_before_model"]["VmRSS"]
        if r["engine"] == "onnxruntime":
            s["rss_text"] = r["rss_text"]["VmRSS"] - base
    s["rss_both"] = r["rss_both"]["VmRSS"] - base
    s["rss_total"] = r["rss_both"]["VmRSS"]
    s["rss_peak"] = r["rss_both"]["VmHWM"]  # the high-water mark: loading a tower briefly holds its weights twice
    return s


# --- output -----------------------------------------------------------------------------------------------------

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(res, args):
    sql, q8 = summarise(res["sql_fp32"]), summarise(res["sql_int8"]) if "sql_int8" in res else None
    ortp = summarise(res["onnxruntime"]) if "onnxruntime" in res else None
    oc = summarise(res["open_clip"]) if "open_clip" in res else None
    cols = ["clip_search SQL", "SQL int8", "onnxruntime py", "open_clip torch", "SQL/open_clip", "int8/open_clip"]

    def ratio(side, key, higher_better):
        if side is None or oc is None or side.get(key) is None or oc.get(key) is None:
            return None
        return side[key] / oc[key] if higher_better else oc[key] / side[key]

    rows = [
        ("image, one per call (images/s)", "image_rows_per_s", ".1f", True),
        ("image, batches of %d (images/s)" % args.batch, "image_batch_per_s", ".1f", True),
        ("text short (3-10 words) p50 (ms)", "short_p50", ".1f", False),
        ("text short p95 (ms)", "short_p95", ".1f", False),
        ("text 77 tokens p50 (ms)", "long_p50", ".1f", False),
        ("text 77 tokens p95 (ms)", "long_p95", ".1f", False),
        ("77-token p50 / short p50", "short_vs_long", ".2f", None),
        ("first call: load + 1 text (ms)", "first_call_ms", ".0f", False),
        ("memory added: text tower only (MB)", "rss_text", ".0f", None),
        ("memory added: image tower only", "rss_image", ".0f", None),
        ("memory added: both towers", "rss_both", ".0f", False),
        ("RSS of the backend/process (MB)", "rss_total", ".0f", False),
        ("peak RSS (VmHWM), both towers (MB)", "rss_peak", ".0f", False),
    ]
    width = 34
    lines = [f"{'':{width}}" + "".join(f"{c:>17}" for c in cols)]
    for label, key, spec, hb in rows:
        cells = [fmt(s.get(key) if s else None, spec) for s in (sql, q8, ortp, oc)]
        for side in (sql, q8):
            r = ratio(side, key, hb) if hb is not None else None
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append(f"{label:{width}}" + "".join(f"{c:>17}" for c in cells))
    p = res["parity"]
    lines.append(f"{'cosine vs open_clip, texts (min)':{width}}" + "".join(
        f"{c:>17}" for c in (fmt(p.get("sql_fp32_text_min"), ".6f"), fmt(p.get("sql_int8_text_min"), ".4f"),
                             fmt(p.get("onnxruntime_text_min"), ".6f"), "1 (itself)")))
    lines.append(f"{'cosine vs open_clip, images (min)':{width}}" + "".join(
        f"{c:>17}" for c in (fmt(p.get("sql_fp32_image_min"), ".6f"), fmt(p.get("sql_int8_image_min"), ".4f"),
                             fmt(p.get("onnxruntime_image_min"), ".6f"), "1 (itself)")))
    if "sql_int8" in res:
        lines.append(f"{'int8 vs fp32 (SQL) cosine, min':{width}}{'':>17}" +
                     f"{'%.4f / %.4f' % (p['int8_vs_fp32_text_min'], p['int8_vs_fp32_image_min']):>17}"
                     + "   (texts / images)")
    lines.append("Ratios: how many times faster (or smaller) than open_clip on PyTorch; above 1 is better.")
    loaded = res["sql_fp32"]["info"]["loaded"]
    lines.append(f"A backend that only embedded texts has loaded the image tower: {'yes' if loaded['image'] else 'no'} "
                 f"(clip_info() after the text workload)")
    if "hnsw" in res:
        h = res["hnsw"]
        lines += ["", f"pgvector HNSW: {args.hnsw_rows} x {res['dim']}-d clustered random vectors, m=16, "
                      f"ef_construction=64, {args.hnsw_queries} queries; build {h['hnsw_build_s']:.1f} s "
                      f"({args.threads - 1} parallel workers), index {h['hnsw_index_mb']:.0f} MB (table {h['hnsw_table_mb']:.0f} MB); "
                      f"exact search {h['hnsw_exact_ms']:.0f} ms/query",
                  f"{'ef_search':>10}{'recall@10':>12}{'p50 ms':>10}{'p95 ms':>10}"]
        for s in h["hnsw_search"]:
            lines.append(f"{s['ef_search']:>10}{s['recall_at_10']:>12.3f}{pct(s['ms'], .5):>10.2f}{pct(s['ms'], .95):>10.2f}")
    return "\n".join(lines)


def installed_build():
    """sha256 of the installed extension library, and whether it is this checkout's release build: other work
    on the machine may install another build (scripts/test.sh installs a debug one) while the benchmark runs."""
    pkglibdir = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True, check=True).stdout.strip()
    digest = lambda f: hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).exists() else None
    installed = digest(Path(pkglibdir) / "clip_search.so")
    return installed, installed is not None and installed == digest(ROOT / "target/release/libclip_search.so")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": round(mem / 2**20, 1), "kernel": platform.release()}


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def versions(res):
    import importlib.metadata as md
    info = res["sql_fp32"].get("info", {})
    pg = psql("SELECT json_build_object('pg', current_setting('server_version'), 'vector', "
              "(SELECT extversion FROM pg_extension WHERE extname = 'vector'))")
    return {"postgres": pg["pg"], "pgvector": pg["vector"],
            "ONNX Runtime in clip_search": info.get("onnxruntime_version"),
            **{p: md.version(p) for p in ("onnxruntime", "torch", "open_clip_torch")}}


def report(res, args, text, command):
    m = res["machine"]
    warning = f"\n**{res['warning']}**\n" if "warning" in res else ""
    return f"""## Run of {res['date']}

Command: `{command}`

Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gb']} GB memory, Linux {m['kernel']}. Load average (1, 5, 15 min)
{' '.join(res['load_start'])} at the start, {' '.join(res['load_end'])} at the end. Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}.
Model: {res['model']}; {args.threads} thread(s) everywhere; {res['images']} images ({res['photos']} photos x {args.copies}),
{res['texts']['short']} short and {res['texts']['long']} long texts x {args.rounds} rounds. Wall time {res['wall_s']:.0f} s.
{warning}
```
{text}
```

"""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="fp32 model directory (random weights with a seed)")
    p.add_argument("--int8-dir", help="its int8 variant (tools/export_model.py --precision int8)")
    p.add_argument("--photos", required=True)
    p.add_argument("--texts", default=str(BENCH / "texts.json"))
    p.add_argument("--checkpoint", required=True, help="open_clip state dict of the same weights (made when missing)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hnsw-rows", type=int, default=100_000)
    p.add_argument("--hnsw-queries", type=int, default=100)
    p.add_argument("--ef-search", type=int, nargs="+", default=[10, 20, 40, 100, 200])
    p.add_argument("--skip", nargs="*", default=[], choices=("peers", "int8", "hnsw"))
    p.add_argument("--report", help="append the run, as Markdown, to this file")
    p.add_argument("--json", help="write every measurement to this file")
    p.add_argument("--command", help="the command line to quote in the report")
    args = p.parse_args()

    t_start = time.time()
    build, is_release = installed_build()
    if not is_release:
        sys.exit("the installed clip_search.so is not this checkout's release build (target/release): run "
                 "scripts/install.sh, or scripts/bench.sh, which does")
    texts = json.loads(Path(args.texts).read_text())
    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "load_start": loadavg(),
           "model": f"{manifest['name']} ({manifest['weights']})", "dim": manifest["embed_dim"],
           "texts": {k: len(texts[k]) for k in ("short", "long")}}
    names = setup_database(args, texts)
    res["photos"], res["images"] = len(names), len(names) * args.copies

    def step(name, f):
        t0 = time.time()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        out = f()
        print(f"[bench] {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        return out

    res["sql_fp32"] = step("clip_search SQL, fp32", lambda: run_sql(args, args.model_dir, names[0]))
    if "peers" not in args.skip:
        res["onnxruntime"] = step("onnxruntime (Python)", lambda: run_peer(args, "onnxruntime"))
        res["open_clip"] = step("open_clip (PyTorch)", lambda: run_peer(args, "open_clip"))
    if args.int8_dir and "int8" not in args.skip:
        res["sql_int8"] = step("clip_search SQL, int8", lambda: run_sql(args, args.int8_dir, names[0]))
    if "hnsw" not in args.skip:
        res["hnsw"] = step("pgvector HNSW", lambda: run_hnsw(args, manifest["embed_dim"]))

    # Cosines: open_clip is the reference; int8 is also compared with the fp32 model through SQL.
    par = {}
    ref = res.get("open_clip")
    for side in ("sql_fp32", "sql_int8", "onnxruntime"):
        if side in res and ref:
            par[f"{side}_text_min"] = min(cosines(res[side]["text_embeddings"], ref["text_embeddings"]))
            par[f"{side}_image_min"] = min(cosines(res[side]["image_embeddings"], ref["image_embeddings"]))
    if "sql_int8" in res:
        c = cosines(res["sql_int8"]["text_embeddings"], res["sql_fp32"]["text_embeddings"])
        par["int8_vs_fp32_text_min"], par["int8_vs_fp32_text_mean"] = min(c), statistics.mean(c)
        c = cosines(res["sql_int8"]["image_embeddings"], res["sql_fp32"]["image_embeddings"])
        par["int8_vs_fp32_image_min"], par["int8_vs_fp32_image_mean"] = min(c), statistics.mean(c)
    res["parity"] = par
    res["load_end"], res["wall_s"] = loadavg(), time.time() - t_start
    if installed_build()[0] != build:
        res["warning"] = "the installed clip_search.so changed during the run: the SQL figures may mix two builds"
    res["versions"] = versions(res)

    text = table(res, args)
    print(f"\nclip_search benchmark: {res['model']}, {args.threads} thread(s), {res['images']} images, "
          f"{res['texts']['short']} short + {res['texts']['long']} long texts x {args.rounds}; "
          f"load {' '.join(res['load_start'])} -> {' '.join(res['load_end'])}\n")
    print(text)
    if "warning" in res:
        print(f"\nWARNING: {res['warning']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res) + "\n")
    if args.report:
        with open(args.report, "a") as f:
            f.write(report(res, args, text, args.command or shlex.join(sys.argv)))
        print(f"\n[bench] appended the run to {args.report}", file=sys.stderr)


if __name__ == "__main__":
    main()
