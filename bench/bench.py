#!/usr/bin/env python3
"""Driver of scripts/bench.sh: clip_search through SQL against its peers, in one run, on one machine.

Same photos, same texts, same weights, same thread count everywhere. The SQL side runs in the cluster that PGHOST
and PGPORT name, in a database of its own; every SQL time is taken inside the backend. The peers (bench/peers.py)
run as separate processes. Prints one table and, with --report, writes it as Markdown with the machine described.
The weights part compares clip.shared_weights on and off, with every backend's memory read by this driver from
/proc/PID/smaps_rollup (it runs as root or as the server's user). A part that fails (a SQL session, a peer, the
int8 model, the HNSW or weights part) is reported in the table and the others go on; the exit status is then 1.
"""
import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DB = "clip_bench"


class PartFailed(Exception):
    """One part of the benchmark failed; the others go on."""


def psql(sql=None, *, file=None, db=DB, settings=None, variables=None):
    """Runs SQL in a fresh backend; returns the JSON objects it printed (one per line), merged."""
    cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db]
    for k, v in (variables or {}).items():
        cmd += ["-v", f"{k}={v}"]
    if file:
        cmd += ["-f", str(file)]
    r = subprocess.run(cmd, input=sql, text=True, capture_output=True, env=session_env(settings))
    if r.returncode:
        raise PartFailed(f"psql failed: {r.stderr.strip()}")
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


def session_env(settings):
    """The environment of a psql that starts its backend with these settings (PGOPTIONS)."""
    env = dict(os.environ)
    if settings:
        env["PGOPTIONS"] = " ".join(f"-c {k}={str(v).replace(' ', chr(92) + ' ')}" for k, v in settings.items())
    return env


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


def sql_settings(args, model_dir, shared=True, cache=None):
    """The settings of a benchmark backend: shared weights (the default) from the benchmark's own cache, or not."""
    return {"clip.model_dir": Path(model_dir).resolve(), "clip.intra_op_threads": args.threads,
            "clip.batch_size": args.batch, "max_parallel_workers_per_gather": 0,
            "clip.shared_weights": "on" if shared else "off", "clip.weights_cache": cache or args.weights_cache}


def run_sql(args, model_dir, photo):
    settings = sql_settings(args, model_dir)
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
        raise PartFailed(f"{engine} peer failed: {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout)


def run_hnsw(args, dim):
    return psql(file=BENCH / "hnsw.sql", variables={
        "rows": args.hnsw_rows, "queries": args.hnsw_queries, "dim": dim, "m": 16, "ef_construction": 64,
        "workers": args.threads - 1, "ef_list": "{" + ",".join(str(e) for e in args.ef_search) + "}"})


# --- weights: shared (mapped from prepared files) against in-heap ----------------------------------------------

WEIGHT_MODES = ("shared", "heap")


class Backend:
    """A psql session kept open, so that its backend, and the model it loaded, stays alive while others run."""
    DONE = "--bench-statement-done--"

    def __init__(self, settings):
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", DB],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True,
                                     env=session_env(settings))
        self.pid = int(self.query("SELECT pg_backend_pid()"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def query(self, sql):
        """Runs one statement and returns what it printed; psql ends at the first error (ON_ERROR_STOP)."""
        try:
            self.proc.stdin.write(f"{sql};\n\\echo {self.DONE}\n")
            self.proc.stdin.flush()
            lines = []
            for line in self.proc.stdout:
                if line.rstrip("\n") == self.DONE:
                    return "\n".join(lines)
                lines.append(line.rstrip("\n"))
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.errors.seek(0)
        raise PartFailed(f"psql failed: {self.errors.read().strip()}")

    def json(self, sql):
        return json.loads(self.query(sql))

    def close(self):
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self.proc.wait()
        self.errors.close()


def memory(pid):
    """MB of a process's memory from /proc/PID/smaps_rollup (the driver runs as root or as the server's user):
    rss, pss (each shared page divided among the processes that map it), private (Private_Clean + Private_Dirty:
    pages no other process maps, file pages included) and anonymous (memory of no file: heap, stacks)."""
    keys = {"Rss": "rss", "Pss": "pss", "Private_Clean": "private", "Private_Dirty": "private",
            "Anonymous": "anonymous"}
    out = dict.fromkeys(keys.values(), 0.0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[keys[key]] += int(value.split()[0]) / 1024
    return out


def cpu_and_faults(pid):
    """User + system CPU time of a process, all threads, in ms (clock-tick resolution), and its major page faults
    (pages read from disk: a mapped weights file evicted from the page cache), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK"), int(fields[9])


def mem_available_mb():
    return next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                if l.startswith("MemAvailable")) / 1024


WORKLOAD = "SELECT bench.embed_texts_and_images()"
SHORT_TEXTS = "ARRAY(SELECT t FROM bench.texts WHERE kind = 'short' ORDER BY n)"


def timed(backend, sql):
    """The JSON a statement returns, the backend's CPU time (ms) spent on it and the major faults it took."""
    c0, f0 = cpu_and_faults(backend.pid)
    out = backend.json(sql)
    c1, f1 = cpu_and_faults(backend.pid)
    return out, c1 - c0, f1 - f0


def first_calls(backend, photo):
    """A fresh backend's first text call (loads the ONNX Runtime library, the tokenizer and the text tower) and
    first image call (loads the image tower): wall ms taken inside the backend, and CPU ms."""
    text_ms, text_cpu, text_faults = timed(backend, "SELECT to_json((bench.time_texts(ARRAY['a photo of a cat'], 1))[1])")
    image_ms, image_cpu, image_faults = timed(backend, f"SELECT to_json(bench.time_image({quote(photo)}))")
    return {"text_ms": text_ms, "text_cpu_ms": text_cpu, "image_ms": image_ms, "image_cpu_ms": image_cpu,
            "major_faults": text_faults + image_faults}


def check_mode(backend, mode):
    """The mode this backend really ran in, from clip_info(): a setting that did not take would be measured as
    the other mode."""
    found = backend.json("SELECT clip_info()->'weight_sharing'->'mode'")
    if found != mode:
        raise PartFailed(f"clip_info() reports weight_sharing mode {found}, {mode} was set")


def backend_memory(args, settings, mode, photo):
    """(a) and (d) of one mode. A holder backend loads both towers and embeds; its memory then is that of the
    only backend holding the model. With the holder alive, a fresh backend does the same: the memory it adds
    (after minus before) is what each further backend costs. Then fresh backends, one at a time, time their first
    calls while the holder keeps the model mapped (warm)."""
    with Backend(settings) as holder:
        holder.query(WORKLOAD)  # on a host that never prepared the model, this prepares it (not measured)
        check_mode(holder, mode)
        out = {"lone": memory(holder.pid)}
        with Backend(settings) as b:
            before = memory(b.pid)
            b.query(WORKLOAD)
            after = memory(b.pid)
            out["clip_info_memory"] = b.json("SELECT clip_info()->'memory'")
        out.update(fresh=before, after=after, added={k: after[k] - before[k] for k in after})
        out["first"] = []
        for _ in range(args.weights_first_calls):
            with Backend(settings) as b:
                out["first"].append(first_calls(b, photo))
    return out


def interleaved_speed(args, settings):
    """(c): single-image throughput and short-text latency of a shared and a heap backend, both loaded and warm,
    in alternating rounds (shared first in even rounds, heap first in odd ones), so that a change in the machine's
    load hits both alike. CPU time per call is read from /proc as well: it is steadier than wall time on a
    machine that others use."""
    out = {m: {"image_ms": [], "image_cpu_ms": 0.0, "text_ms": [], "text_cpu_ms": 0.0, "major_faults": 0}
           for m in WEIGHT_MODES}
    with Backend(settings["shared"]) as shared, Backend(settings["heap"]) as heap:
        backends = {"shared": shared, "heap": heap}
        for b in backends.values():
            b.query(WORKLOAD)
        for r in range(args.weights_rounds):
            for mode in WEIGHT_MODES if r % 2 == 0 else WEIGHT_MODES[::-1]:
                for kind, sql in (("image", "SELECT to_json(bench.time_images(1))"),
                                  ("text", f"SELECT to_json(bench.time_texts({SHORT_TEXTS}, 1))")):
                    ms, cpu, faults = timed(backends[mode], sql)
                    out[mode][f"{kind}_ms"] += ms
                    out[mode][f"{kind}_cpu_ms"] += cpu
                    out[mode]["major_faults"] += faults
    return out


def time_models(args, model_dirs):
    """Models of other architectures or layouts, in one warm backend per model with the same settings: one image per
    call over the photos and short-text latency, medians over the rounds; and the bytes of the model directory's
    files (for a model that clip-fetch installed: what it downloads, and the manifest it writes)."""
    out = []
    for model_dir in model_dirs:
        manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
        image_ms, text_ms = [], []
        with Backend(sql_settings(args, model_dir)) as b:
            b.query(WORKLOAD)
            for _ in range(args.rounds):
                image_ms += b.json("SELECT to_json(bench.time_images(1))")
                text_ms += b.json(f"SELECT to_json(bench.time_texts({SHORT_TEXTS}, 1))")
            info = b.json("SELECT clip_info()")
        out.append({"model": manifest["name"], "dim": manifest["embed_dim"], "context": info["context_length"],
                    "image_size": manifest["image"]["size"], "images_per_s": 1000 / statistics.median(image_ms),
                    "short_text_ms": statistics.median(text_ms),
                    "bytes": sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file())})
    return out


def models_table(title, rows, labels):
    lines = ["", title, f"{'model':<44}{'dim':>6}{'context':>9}{'image px':>10}{'images/s':>10}{'short text ms':>15}"
                        f"{'files MB':>10}"]
    for label, f in zip(labels, rows):
        lines.append(f"{label:<44}{f['dim']:>6}{f['context']:>9}{f['image_size']:>10}{f['images_per_s']:>10.1f}"
                     f"{f['short_text_ms']:>15.1f}{f['bytes'] / 1e6:>10.1f}")
    return lines


def families_table(res):
    if "families" not in res:
        return []
    return models_table("Model families (random weights, real architectures; clip_search SQL, one warm backend each, "
                        "one image per call, short texts; medians; files in 10^6 bytes):",
                        res["families"], [f["model"] for f in res["families"]])


def immich_table(res):
    """Immich's exports (--immich-dirs: each installed model, then the reference export of its architecture)."""
    if "immich" not in res:
        return []
    rows = res["immich"]
    labels = [f["model"] if i % 2 == 0 else f"  export_model.py: {f['model']}" for i, f in enumerate(rows)]
    return models_table("Immich's exports (random weights, real architectures, in Immich's layout, installed by "
                        "clip-fetch --from), each followed by\nthe same architecture exported by tools/export_model.py "
                        "(clip_search SQL, one warm backend each, one image per call, short texts;\nmedians; files in "
                        "10^6 bytes). Immich's text graphs take the full context: a short text costs a full-context "
                        "one.", rows, labels)


def concurrent_pss(args, settings, counts, workload=WORKLOAD):
    """(b): backends that each ran `workload` (texts and a batch of images), started one after another and all
    kept alive; at each count, the sum of their memory. A backend is started only while the memory available leaves
    room for two more of the first one's size and a reserve of 3 GB; the counts not reached are left out."""
    sums, first_pss = {}, None
    with contextlib.ExitStack() as stack:
        backends = []
        for n in range(1, max(counts) + 1):
            if first_pss is not None and mem_available_mb() < 2 * first_pss + 3072:
                break
            b = stack.enter_context(Backend(settings))
            b.query(workload)
            backends.append(b)
            if n == 1:
                first_pss = memory(b.pid)["pss"]
            if n in counts:
                mems = [memory(b.pid) for b in backends]
                sums[n] = {k: sum(m[k] for m in mems) for k in mems[0]}
                sums[n]["max_private"] = max(m["private"] for m in mems)
    return sums


def server_owner():
    """The uid and gid of the server's data directory: the user the cache directories must belong to."""
    st = os.stat(psql("SELECT json_build_object('dir', current_setting('data_directory'))")["dir"])
    return st.st_uid, st.st_gid


def owned_directory(path, owner):
    """Creates `path` (mode 0700) for the server's user when the driver runs as root."""
    path.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, *owner)
    return path


def prepare_weights(args, model_dirs):
    """The benchmark's cache of shared weights, with every model prepared in it (a no-op once done on this host),
    so that no measured first call includes a preparation unless it is meant to."""
    owned_directory(Path(args.weights_cache), server_owner())
    for model_dir in model_dirs:
        psql("SELECT bench.embed_texts_and_images()", settings=sql_settings(args, model_dir))


def run_weights(args, model_dir, photo):
    """The weights part for one model: shared against heap, every figure from this run."""
    out = {}
    # (d) cold: a cache directory that has never seen the model, so the first backend prepares each tower.
    cache = Path(args.weights_cache)
    cold = owned_directory(Path(tempfile.mkdtemp(prefix="weights-cold-", dir=cache.parent)), server_owner())
    try:
        with Backend(sql_settings(args, model_dir, cache=cold)) as b:
            out["cold"] = first_calls(b, photo)
    finally:
        shutil.rmtree(cold)
    by_mode = {m: sql_settings(args, model_dir, shared=m == "shared") for m in WEIGHT_MODES}
    for mode in WEIGHT_MODES:
        out[mode] = backend_memory(args, by_mode[mode], mode, photo)
    out["speed"] = interleaved_speed(args, by_mode)
    for mode in WEIGHT_MODES:
        out[mode]["concurrent"] = concurrent_pss(args, by_mode[mode], args.weights_backends)
    return out


# --- models: two registered models in every backend, against one ------------------------------------------------

MODEL_NAMES = ("bench_fp32", "bench_int8")


def run_models(args, model_dirs):
    """Backends that embed the weights part's workload with each of two registered models (the fp32 model and its
    int8 variant), against backends that use the fp32 one alone, shared weights, both measured in this run: the
    private memory a backend adds while another holds the same models, and the summed PSS of concurrent backends."""
    psql("\n".join(f"SELECT clip_register_model({quote(n)}, {quote(str(Path(d).resolve()))}, replace => true);"
                   for n, d in zip(MODEL_NAMES, model_dirs)))
    settings = {**sql_settings(args, model_dirs[0]), "clip.max_loaded_models": len(MODEL_NAMES)}
    out = {}
    for label, names in (("one", MODEL_NAMES[:1]), ("two", MODEL_NAMES)):
        workload = f"SELECT bench.embed_texts_and_images_by(ARRAY[{', '.join(quote(n) for n in names)}]::name[])"
        with Backend(settings) as holder:
            holder.query(workload)
            with Backend(settings) as b:
                before = memory(b.pid)
                b.query(workload)
                after = memory(b.pid)
        out[label] = {"added": {k: after[k] - before[k] for k in after},
                      "concurrent": concurrent_pss(args, settings, args.weights_backends, workload)}
    return out


def models_memory_table(res, args):
    m = res.get("models")
    if not m:
        return []
    lines = ["", f"Two models in every backend: {res['model']}, fp32 and int8, registered and named in each call, "
                 "shared weights, clip.max_loaded_models = 2",
             f"{'':40}{'fp32 only':>14}{'fp32 + int8':>14}"]
    rows = [("private memory added (MB) [1]", m["one"]["added"]["private"], m["two"]["added"]["private"])]
    rows += [(f"sum of PSS, {n} backend{'s' if n > 1 else ''} (MB) [3]", concurrent_sum(m, "one", n),
              concurrent_sum(m, "two", n)) for n in args.weights_backends]
    for label, one, two in rows:
        cells = [fmt(v[0], ".0f") + v[1] if isinstance(v, tuple) else fmt(v, ".0f") for v in (one, two)]
        lines.append(f"{label:40}" + "".join(f"{c:>14}" for c in cells))
    lines += ["[1] Private_Clean + Private_Dirty of /proc/PID/smaps_rollup a fresh backend adds by embedding the short "
              "texts and the 16 photos (one clip_embed_images call) with each model, while another backend holds the "
              "same models.",
              "[3] backends that each did [1]'s workload, all alive at once; PSS divides each shared page among the "
              "processes that map it."]
    return lines


def concurrent_sum(w, mode, n):
    """The measured sum of PSS of n backends, or, where the memory guard stopped short of n, a linear
    extrapolation from the counts measured (marked with its 'x')."""
    c = {int(k): v for k, v in w[mode]["concurrent"].items()}
    if n in c:
        return c[n]["pss"], ""
    if not c:
        return None, ""
    lo, hi = min(c), max(c)
    per = (c[hi]["pss"] - c[lo]["pss"]) / (hi - lo) if hi > lo else c[lo]["pss"] / lo
    return c[hi]["pss"] + (n - hi) * per, "x"


def weights_table(res, args):
    """The weights part's table, one block per model, and the issue's goals against the figures."""
    lines = []
    for key, label in (("weights_fp32", "fp32"), ("weights_int8", "int8")):
        w = res.get(key)
        if not w:
            continue
        speed = {m: w["speed"][m] for m in WEIGHT_MODES}
        n_img = {m: len(speed[m]["image_ms"]) for m in WEIGHT_MODES}
        n_txt = {m: len(speed[m]["text_ms"]) for m in WEIGHT_MODES}
        first = {m: {k: statistics.median(f[k] for f in w[m]["first"]) for k in w[m]["first"][0]}
                 for m in WEIGHT_MODES}
        # (label, shared, heap, which ratio: "heap/shared" where smaller is better, "shared/heap" where larger is)
        rows = [
            ("private memory added (MB) [1]", *(w[m]["added"]["private"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("Anonymous memory added (MB)", *(w[m]["added"]["anonymous"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("private memory, only backend (MB) [2]", *(w[m]["lone"]["private"] for m in WEIGHT_MODES), "heap/shared",
             ".0f"),
            ("PSS of a fresh backend (MB)", *(w[m]["fresh"]["pss"] for m in WEIGHT_MODES), None, ".0f"),
        ]
        notes = []
        for n in args.weights_backends:
            cells = [concurrent_sum(w, m, n) for m in WEIGHT_MODES]
            if any(mark for _, mark in cells):
                notes.append(f"PSS of {n} backends marked x: extrapolated linearly from the counts measured (the "
                             "memory available did not allow more backends)")
            rows.append((f"sum of PSS, {n} backend{'s' if n > 1 else ''} (MB) [3]", *cells, "heap/shared", ".0f"))
        rows += [
            ("image, one per call (images/s)",
             *(1000 * n_img[m] / sum(speed[m]["image_ms"]) for m in WEIGHT_MODES), "shared/heap", ".2f"),
            ("image, CPU ms per image", *(speed[m]["image_cpu_ms"] / n_img[m] for m in WEIGHT_MODES), "heap/shared",
             ".1f"),
            ("text short p50 (ms)", *(pct(speed[m]["text_ms"], .5) for m in WEIGHT_MODES), "heap/shared", ".2f"),
            ("text short, CPU ms per text", *(speed[m]["text_cpu_ms"] / n_txt[m] for m in WEIGHT_MODES),
             "heap/shared", ".2f"),
            ("major page faults in those calls", *(speed[m]["major_faults"] for m in WEIGHT_MODES), None, "d"),
            ("first text call, warm (ms) [4]", *(first[m]["text_ms"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("  its CPU time (ms)", *(first[m]["text_cpu_ms"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("first image call, warm (ms) [4]", *(first[m]["image_ms"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("  its CPU time (ms)", *(first[m]["image_cpu_ms"] for m in WEIGHT_MODES), "heap/shared", ".0f"),
            ("first text call, cold (ms) [5]", w["cold"]["text_ms"], None, None, ".0f"),
            ("first image call, cold (ms) [5]", w["cold"]["image_ms"], None, None, ".0f"),
        ]
        width = 40
        lines += ["", f"Weights: clip.shared_weights on (shared) and off (heap), {res['model']} {label}, "
                      f"{args.threads} thread(s), batches of {args.batch}",
                  f"{'':{width}}{'shared':>12}{'heap':>12}{'ratio':>12}"]
        for label_, shared, heap, ratio, spec in rows:
            cells = []
            for v in (shared, heap):
                v, mark = v if isinstance(v, tuple) else (v, "")
                cells.append(fmt(v, spec) + mark)
            r = "-"
            if ratio and isinstance(shared, (int, float, tuple)) and isinstance(heap, (int, float, tuple)):
                s_, h_ = (x[0] if isinstance(x, tuple) else x for x in (shared, heap))
                if s_ and h_:
                    r = f"{(h_ / s_ if ratio == 'heap/shared' else s_ / h_):.2f}x"
            lines.append(f"{label_:{width}}" + "".join(f"{c:>12}" for c in cells) + f"{r:>12}")
        s16, _ = concurrent_sum(w, "shared", 16) if 16 in args.weights_backends else (None, "")
        img = (1000 * n_img["shared"] / sum(speed["shared"]["image_ms"])) / \
              (1000 * n_img["heap"] / sum(speed["heap"]["image_ms"]))
        txt = pct(speed["heap"]["text_ms"], .5) / pct(speed["shared"]["text_ms"], .5)
        img_cpu = (speed["heap"]["image_cpu_ms"] / n_img["heap"]) / (speed["shared"]["image_cpu_ms"] / n_img["shared"])
        txt_cpu = (speed["heap"]["text_cpu_ms"] / n_txt["heap"]) / (speed["shared"]["text_cpu_ms"] / n_txt["shared"])
        met = lambda ok: "met" if ok else "NOT met"
        goals = [f"private memory added <= 64 MB: {w['shared']['added']['private']:.0f} MB "
                 f"({met(w['shared']['added']['private'] <= 64)})"]
        if s16 is not None:
            goals.append(f"sum of PSS of 16 backends <= 1536 MB: {s16:.0f} MB ({met(s16 <= 1536)})")
        goals += [f"speed within 5% of heap: images {img:.3f}x, short text {txt:.3f}x by wall time "
                  f"({met(min(img, txt) >= 0.95)}), {img_cpu:.3f}x, {txt_cpu:.3f}x by CPU time "
                  f"({met(min(img_cpu, txt_cpu) >= 0.95)})",
                  f"warm first text call <= 100 ms: {first['shared']['text_ms']:.0f} ms "
                  f"({met(first['shared']['text_ms'] <= 100)})"]
        lines.append("The shared-weights goals: " + "; ".join(goals))
        lines += notes
    if lines:
        lines += [
            "Ratio: heap / shared for memory and times, shared / heap for images/s: above 1, shared is better.",
            "[1] Private_Clean + Private_Dirty of /proc/PID/smaps_rollup a backend adds (after minus before) by "
            "embedding the short texts and the 16 photos in one clip_embed_images call (both towers loaded), while "
            "another backend holds the same model.",
            "[2] the backend that held the model, while it was the only one: a file mapped by one process only "
            "counts as its private memory, so in shared mode this is mostly the mapped weights, shared as soon as "
            "another backend maps them.",
            "[3] backends that each did [1]'s workload, all alive at once, started one after another; PSS divides "
            "each shared page among the processes that map it. A fresh backend's own PSS is included.",
            "[4] median of fresh backends, one at a time, while another backend holds the model (the files mapped, "
            "the page cache warm); times inside the backend, the first text call includes loading ONNX Runtime.",
            f"[5] a fresh backend with clip.weights_cache set to a new empty directory: the first call of each tower "
            f"prepares it (the model files were in the page cache). The shared mode's cache is {args.weights_cache}, "
            "used only by the benchmark, so that no process outside it maps its files.",
        ]
    return lines


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
    sql, q8, ortp, oc = (summarise(res[k]) if k in res else None
                         for k in ("sql_fp32", "sql_int8", "onnxruntime", "open_clip"))
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
    if sql and q8:
        lines.append(f"{'int8 vs fp32 (SQL) cosine, min':{width}}{'':>17}" +
                     f"{'%.4f / %.4f' % (p['int8_vs_fp32_text_min'], p['int8_vs_fp32_image_min']):>17}"
                     + "   (texts / images)")
        speed = ", ".join(f"{label} {ratio:.2f}x" for label, ratio in (
            ("images one per call", q8["image_rows_per_s"] / sql["image_rows_per_s"]),
            ("batches", q8["image_batch_per_s"] / sql["image_batch_per_s"]),
            ("short text", sql["short_p50"] / q8["short_p50"]), ("77-token text", sql["long_p50"] / q8["long_p50"])))
        lines.append(f"int8 vs fp32 (SQL) on this CPU ({res['machine']['int8_isa']}): {speed} as fast")
    lines.append("Ratios: how many times faster (or smaller) than open_clip on PyTorch; above 1 is better.")
    lines.append("clip_search SQL runs with clip.shared_weights on (the default): its RSS counts the mapped weights, "
                 "which every backend shares; the weights part below has the memory a backend holds of its own.")
    if sql:
        loaded = res["sql_fp32"]["info"]["loaded"]
        lines.append(f"A backend that only embedded texts has loaded the image tower: "
                     f"{'yes' if loaded['image'] else 'no'} (clip_info() after the text workload)")
    for part, error in res.get("failed", {}).items():
        lines.append(f"FAILED: {part}: {error}")
    if "hnsw" in res:
        h = res["hnsw"]
        lines += ["", f"pgvector HNSW: {args.hnsw_rows} x {res['dim']}-d clustered random vectors, m=16, "
                      f"ef_construction=64, {args.hnsw_queries} queries; build {h['hnsw_build_s']:.1f} s "
                      f"({args.threads - 1} parallel workers), index {h['hnsw_index_mb']:.0f} MB (table {h['hnsw_table_mb']:.0f} MB); "
                      f"exact search {h['hnsw_exact_ms']:.0f} ms/query",
                  f"{'ef_search':>10}{'recall@10':>12}{'p50 ms':>10}{'p95 ms':>10}"]
        for s in h["hnsw_search"]:
            lines.append(f"{s['ef_search']:>10}{s['recall_at_10']:>12.3f}{pct(s['ms'], .5):>10.2f}{pct(s['ms'], .95):>10.2f}")
    lines += weights_table(res, args)
    lines += models_memory_table(res, args)
    lines += families_table(res)
    lines += immich_table(res)
    return "\n".join(lines)


def installed_build():
    """sha256 of the installed extension library, and whether it is this checkout's release build: other work
    on the machine may install another build (scripts/test.sh installs a debug one) while the benchmark runs."""
    pkglibdir = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True, check=True).stdout.strip()
    digest = lambda f: hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).exists() else None
    installed = digest(Path(pkglibdir) / "clip_search.so")
    return installed, installed is not None and installed == digest(ROOT / "target/release/libclip_search.so")


def int8_isa(flags):
    """The int8 dot-product instructions ONNX Runtime's kernels find on this CPU (it reads the same CPUID bits):
    with VNNI or AMX an int8 model's matrix products are exact and fastest; without, its kernels take other
    paths (the int8 recipe of tools/export_model.py computes the same on all of them)."""
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512bw", "AVX-512 without VNNI"), ("avx2", "AVX2 without VNNI")):
        if flag in flags:
            return name
    return "no AVX2"


def machine():
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in cpuinfo if l.startswith("flags")), [])
    mem = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "int8_isa": int8_isa(flags), "mem_gb": round(mem / 2**20, 1),
            "kernel": platform.release()}


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def versions(res):
    import importlib.metadata as md
    info = res.get("sql_fp32", {}).get("info", {})
    try:
        pg = psql("SELECT json_build_object('pg', current_setting('server_version'), 'vector', "
                  "(SELECT extversion FROM pg_extension WHERE extname = 'vector'))")
    except PartFailed:
        pg = {}
    return {"postgres": pg.get("pg"), "pgvector": pg.get("vector"),
            "ONNX Runtime in clip_search": info.get("onnxruntime_version"),
            **{p: md.version(p) for p in ("onnxruntime", "torch", "open_clip_torch")}}


def report(res, args, text, command):
    m = res["machine"]
    warning = f"\n**{res['warning']}**\n" if "warning" in res else ""
    return f"""## Run of {res['date']}

Command: `{command}`

Machine: {m['nproc']} CPUs ({m['cpu']}, int8 instructions: {m['int8_isa']}), {m['mem_gb']} GB memory, Linux {m['kernel']}. Load average (1, 5, 15 min)
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
    p.add_argument("--weights-cache", required=True, help="clip.weights_cache of the weights part: a directory the benchmark "
                   "alone uses (made when missing; cold-start directories are made and removed beside it)")
    p.add_argument("--weights-rounds", type=int, default=10, help="interleaved speed rounds of the weights part")
    p.add_argument("--weights-first-calls", type=int, default=3, help="fresh backends timed for the warm first call")
    p.add_argument("--weights-backends", type=int, nargs="+", default=[1, 4, 16],
                   help="numbers of concurrent backends whose PSS the weights part sums")
    p.add_argument("--family-dirs", nargs="*", default=[],
                   help="model directories of other families to time beside --model-dir (the families part)")
    p.add_argument("--immich-dirs", nargs="*", default=[],
                   help="pairs: a model installed by clip-fetch from Immich's layout, then the same architecture "
                   "exported by tools/export_model.py (the immich part)")
    p.add_argument("--skip", nargs="*", default=[], choices=("peers", "int8", "hnsw", "weights", "models"))
    p.add_argument("--report", help="append the run, as Markdown, to this file")
    p.add_argument("--json", help="write every measurement to this file")
    p.add_argument("--command", help="the command line to quote in the report")
    args = p.parse_args()

    t_start = time.time()
    texts = json.loads(Path(args.texts).read_text())
    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    names = sorted(f.name for f in Path(args.photos).iterdir() if f.is_file())
    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "load_start": loadavg(),
           "model": f"{manifest['name']} ({manifest['weights']})", "dim": manifest["embed_dim"],
           "texts": {k: len(texts[k]) for k in ("short", "long")},
           "photos": len(names), "images": len(names) * args.copies, "failed": {}}

    def step(key, name, f, blocked=None):
        """Runs one part into res[key]; a failure (or `blocked`, the reason it cannot run) is recorded instead."""
        t0 = time.time()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            if blocked:
                raise PartFailed(blocked)
            res[key] = f()
        except Exception as e:  # whatever one part hits is reported with the results, not fatal to the others
            res["failed"][name] = " ".join(str(e).split()) if isinstance(e, PartFailed) else f"{type(e).__name__}: {e}"
            print(f"[bench] {name} FAILED: {e}", file=sys.stderr, flush=True)
        else:
            print(f"[bench] {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    # The clip_search parts need this checkout's release build (other work on the machine installs other builds)
    # and the benchmark database.
    build, is_release = installed_build()
    sql_blocked = None if is_release else ("the installed clip_search.so is not this checkout's release build "
                                           "(target/release): run scripts/install.sh, or scripts/bench.sh, which does")
    step("database", "benchmark database", lambda: setup_database(args, texts), sql_blocked)
    sql_blocked = sql_blocked or ("benchmark database" in res["failed"] and "no benchmark database (see above)")
    int8_dir = args.int8_dir if args.int8_dir and "int8" not in args.skip else None
    int8_missing = int8_dir and not (Path(int8_dir) / "manifest.json").exists() and \
        f"no int8 model in {int8_dir} (its conversion failed: see the exporter's output above)"
    step("prepared", "shared weights prepared", lambda: prepare_weights(
        args, [args.model_dir] + ([int8_dir] if int8_dir and not int8_missing else [])), sql_blocked)
    step("sql_fp32", "clip_search SQL, fp32", lambda: run_sql(args, args.model_dir, names[0]), sql_blocked)
    if "peers" not in args.skip:
        step("onnxruntime", "onnxruntime (Python)", lambda: run_peer(args, "onnxruntime"))
        step("open_clip", "open_clip (PyTorch)", lambda: run_peer(args, "open_clip"))
    if int8_dir:
        step("sql_int8", "clip_search SQL, int8", lambda: run_sql(args, int8_dir, names[0]),
             sql_blocked or int8_missing)
    if "hnsw" not in args.skip:
        step("hnsw", "pgvector HNSW", lambda: run_hnsw(args, manifest["embed_dim"]))
    if "weights" not in args.skip:
        step("weights_fp32", "weights shared vs heap, fp32", lambda: run_weights(args, args.model_dir, names[0]),
             sql_blocked)
        if int8_dir:
            step("weights_int8", "weights shared vs heap, int8", lambda: run_weights(args, int8_dir, names[0]),
                 sql_blocked or int8_missing)
    if "models" not in args.skip and int8_dir:
        step("models", "two models in every backend", lambda: run_models(args, [args.model_dir, int8_dir]),
             sql_blocked or int8_missing)

    if args.family_dirs:
        step("families", "model families", lambda: time_models(args, [args.model_dir] + args.family_dirs),
             sql_blocked)
    if args.immich_dirs:
        step("immich", "Immich's exports", lambda: time_models(args, args.immich_dirs), sql_blocked)

    # Cosines: open_clip is the reference; int8 is also compared with the fp32 model through SQL.
    par = {}
    ref = res.get("open_clip")
    for side in ("sql_fp32", "sql_int8", "onnxruntime"):
        if side in res and ref:
            par[f"{side}_text_min"] = min(cosines(res[side]["text_embeddings"], ref["text_embeddings"]))
            par[f"{side}_image_min"] = min(cosines(res[side]["image_embeddings"], ref["image_embeddings"]))
    if "sql_int8" in res and "sql_fp32" in res:
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
        previous = Path(args.report).read_text() if Path(args.report).exists() else ""
        with open(args.report, "a") as f:
            # A blank line after whatever the file ends with, so that the run's heading starts a section.
            newlines = len(previous) - len(previous.rstrip("\n"))
            f.write("\n" * max(0, 2 - newlines) if previous else "")
            f.write(report(res, args, text, args.command or shlex.join(sys.argv)))
        print(f"\n[bench] appended the run to {args.report}", file=sys.stderr)
    if res["failed"]:
        sys.exit(f"[bench] {len(res['failed'])} part(s) failed: {', '.join(res['failed'])}")


if __name__ == "__main__":
    main()
