"""A local emulator of the Hugging Face hub's download protocol, for offline tests of model fetchers.

It serves model repositories from local folders the way the hub and huggingface_hub see them:
  HEAD/GET /{owner}/{name}/resolve/{revision}/{path}   files; every answer carries X-Repo-Commit. Regular ("git")
      files: 200, ETag "<git blob sha1>". LFS files (.onnx .onnx_data .data .bin .pb .safetensors, or over 1 MB):
      302 to /lfs/<sha256>, with X-Linked-Etag "<sha256>", X-Linked-Size and ETag "<git sha1 of the LFS pointer>".
  HEAD/GET /lfs/<sha256>   the LFS storage: ETag "<sha256>", Accept-Ranges, Range -> 206 / 416. It carries
      X-Repo-Commit too, because huggingface_hub follows a same-host redirect on its metadata HEAD and then wants it;
      with --cdn-host HOST the redirect is absolute to http://HOST:PORT/lfs/... (another host name, as the hub's CDN
      is), huggingface_hub takes the metadata from the 302 itself, and the storage sends no X-Repo-Commit.
  GET /api/models/{owner}/{name}[/revision/{revision}]   {"id", "sha", "siblings": [{"rfilename"}]}
  GET /api/models/{owner}/{name}/tree/{revision}[/{path}][?recursive=true]   [{type, oid, size, path, lfs?}],
      at most --page-size entries a page, with Link: <...&cursor=N>; rel="next" while more remain.
Revisions are "main" or the repo's commit sha (sha1 of its file listing). Errors are 404 with X-Error-Code
RepoNotFound, RevisionNotFound or EntryNotFound and a JSON body {"error": ...}. No X-Xet-* header is ever sent.

Command line:
  python3 tests/hub/emulator.py --port PORT [--repo OWNER/NAME=DIR]... [--page-size N] [--log FILE]
                                [--cdn-host HOST] [--fault SPEC]...
PORT 0 picks a free port. Once listening it prints one line "listening on http://127.0.0.1:PORT". Each repo holds
every regular file under DIR (read at start). --log FILE appends "METHOD PATH RANGE STATUS BYTES_SENT" per request.

Faults (--fault, repeatable; or at run time: POST /_emulator/faults with a JSON list of SPECs replaces the list,
GET /_emulator/faults reads it). PATH is a repo-relative path (e.g. visual/model.onnx), in any repo.
  cut:PATH:BYTES       the next GET carrying PATH's content sends the full Content-Length but closes the
                       connection after BYTES body bytes; one-shot (it leaves the list once it has fired)
  corrupt:PATH         PATH's content has its middle byte flipped (same length: only a hash check notices)
  size:PATH:N          metadata (HEAD's Content-Length, X-Linked-Size, the tree's size) claims N; bodies are real
  no-range             Range headers are ignored (200 with the whole file)
  slow:PATH:BPS        PATH's content is sent at BPS bytes per second
  status:PATH:CODE     every request for PATH (resolve, or its LFS storage) answers CODE with an empty body
"""
import argparse
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".onnx", ".onnx_data", ".data", ".bin", ".pb", ".safetensors")
LFS_THRESHOLD = 1 << 20


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class File:
    def __init__(self, path, data):
        self.path, self.data, self.size = path, data, len(data)
        self.oid = git_sha1(data)
        self.lfs = path.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD
        if self.lfs:
            self.sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            self.pointer_size, self.oid = len(pointer), git_sha1(pointer.encode())


class Repo:
    def __init__(self, repo_id, folder):
        self.id, self.files = repo_id, {}
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    rel = os.path.relpath(full, folder).replace(os.sep, "/")
                    with open(full, "rb") as f:
                        self.files[rel] = File(rel, f.read())
        listing = "".join(f"{p} {f.oid}\n" for p, f in sorted(self.files.items()))
        self.sha = hashlib.sha1(listing.encode()).hexdigest()
        self.dirs = sorted({p.rsplit("/", i)[0] for p in self.files for i in range(1, p.count("/") + 1)})

    def dir_oid(self, d):
        inside = "".join(f"{p} {f.oid}\n" for p, f in sorted(self.files.items()) if p.startswith(d + "/"))
        return hashlib.sha1(f"tree {d}\n{inside}".encode()).hexdigest()


class Faults:
    """The current faults, kept as their SPEC strings for GET /_emulator/faults (a cut leaves once it fires)."""

    def __init__(self, specs):
        self.lock = threading.Lock()
        self.set(specs)

    def set(self, specs):
        parsed = []
        for spec in specs:
            kind, _, rest = spec.partition(":")
            if kind == "no-range" and not rest:
                parsed.append((spec, kind, None, None))
            elif kind == "corrupt" and rest:
                parsed.append((spec, kind, rest, None))
            elif kind in ("cut", "size", "slow", "status") and re.fullmatch(r".+:\d+", rest):
                path, arg = rest.rsplit(":", 1)
                parsed.append((spec, kind, path, int(arg)))
            else:
                raise ValueError(f"bad fault spec: {spec!r}")
        with self.lock:
            self.items = parsed

    def specs(self):
        with self.lock:
            return [s for s, _, _, _ in self.items]

    def get(self, kind, path=None, consume=False):
        """The argument of the first fault of this kind for path (True for argument-less ones), else None."""
        with self.lock:
            for item in self.items:
                if item[1] == kind and item[2] == path:
                    if consume:
                        self.items.remove(item)
                    return True if item[3] is None else item[3]
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version, sys_version = "hub-emulator", ""

    def log_message(self, *args):  # the --log file replaces the default stderr lines
        pass

    def do_HEAD(self):
        self.route()

    def do_GET(self):
        self.route()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path != "/_emulator/faults":
            return self.error(404, None, "Not Found")
        try:
            specs = json.loads(body)
            assert isinstance(specs, list) and all(isinstance(s, str) for s in specs)
            self.server.faults.set(specs)
        except (ValueError, AssertionError) as e:
            return self.error(400, None, f"expected a JSON list of fault specs: {e}")
        self.json(self.server.faults.specs())

    # -- responses --

    def send(self, code, headers, body=b"", length=None, file=None):
        """Send one response. length: the Content-Length to claim on HEAD (metadata may lie under size:);
        file: the File whose content the body is (cut and slow apply). The --log line is written before the
        response's last bytes go out, so a client that has its whole answer finds the line already there."""
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        is_head = self.command == "HEAD"
        self.send_header("Content-Length", str(length if is_head and length is not None else len(body)))
        cut = bps = None
        if file and not is_head and body:
            cut = self.server.faults.get("cut", file.path, consume=True)
            bps = self.server.faults.get("slow", file.path)
        limit = 0 if is_head else len(body) if cut is None else min(cut, len(body))
        step = max(1, bps // 10) if bps else 1 << 16
        prefix = f"{self.command} {self.path} {self.headers.get('Range') or '-'} {code}"
        sent, logged = 0, False
        try:
            if limit == 0:
                logged = self.server.log(f"{prefix} 0")
            self.end_headers()
            while sent < limit:
                chunk = body[sent:min(limit, sent + step)]
                if sent + len(chunk) == limit:
                    logged = self.server.log(f"{prefix} {limit}")
                self.wfile.write(chunk)
                sent += len(chunk)
                if bps:
                    time.sleep(len(chunk) / bps)
        except OSError:  # the client went away
            self.close_connection = True
            if not logged:
                self.server.log(f"{prefix} {sent}")
        if limit < len(body) and not is_head:  # cut: close before the promised end
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def json(self, obj, headers=None):
        body = json.dumps(obj, indent=None).encode()
        self.send(200, dict(headers or {}, **{"Content-Type": "application/json; charset=utf-8"}), body)

    def error(self, code, error_code, message, headers=None):
        h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        if error_code:
            h.update({"X-Error-Code": error_code, "X-Error-Message": message})
        self.send(code, h, json.dumps({"error": message}).encode())

    # -- routing --

    def route(self):
        url = urlsplit(self.path)
        parts = url.path.split("/")[1:]
        query = dict(parse_qsl(url.query))
        if url.path == "/_emulator/faults" and self.command == "GET":
            return self.json(self.server.faults.specs())
        if len(parts) == 2 and parts[0] == "lfs":
            return self.serve_lfs(unquote(parts[1]))
        if len(parts) >= 3 and parts[:2] == ["api", "models"]:
            parts = parts[2:]
            api = True
        elif len(parts) >= 5 and parts[2] == "resolve":
            api = False
        else:
            return self.error(404, None, "Not Found")
        repo = self.server.repos.get(f"{unquote(parts[0])}/{unquote(parts[1])}")
        if repo is None:
            return self.error(404, "RepoNotFound", "Repository not found")
        rest = [unquote(p) for p in parts[2:]]
        if api and not rest:
            rest = ["revision", "main"]
        if len(rest) < 2 or (api and rest[0] not in ("revision", "tree")):
            return self.error(404, None, "Not Found")
        if rest[1] not in ("main", repo.sha):
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
        path = "/".join(rest[2:])
        if not api:
            return self.serve_resolve(repo, path)
        if rest[0] == "revision" and not path:
            siblings = [{"rfilename": p} for p in repo.files]
            return self.json({"id": repo.id, "modelId": repo.id, "sha": repo.sha, "private": False,
                              "siblings": siblings})
        if rest[0] == "tree":
            return self.serve_tree(repo, path, query, url)
        self.error(404, None, "Not Found")

    def claimed_size(self, f):
        size = self.server.faults.get("size", f.path)
        return f.size if size is None else size

    def serve_resolve(self, repo, path):
        f = repo.files.get(path)
        commit = {"X-Repo-Commit": repo.sha}
        if (code := self.server.faults.get("status", path)) is not None:
            return self.send(code, {})
        if f is None:
            return self.error(404, "EntryNotFound", f"Entry not found: {path}", commit)
        size = self.claimed_size(f)
        if f.lfs:
            location = f"/lfs/{f.sha256}"
            if self.server.cdn_host:
                location = f"http://{self.server.cdn_host}:{self.server.server_address[1]}{location}"
            body = f"Found. Redirecting to {location}".encode()
            return self.send(302, {**commit, "Location": location, "ETag": f'"{f.oid}"',
                                   "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(size),
                                   "Content-Type": "text/plain; charset=utf-8"}, body)
        self.serve_content(f, {**commit, "ETag": f'"{f.oid}"'}, size)

    def serve_lfs(self, sha256):
        for repo in self.server.repos.values():
            f = next((f for f in repo.files.values() if f.lfs and f.sha256 == sha256), None)
            if f is not None:
                break
        else:
            return self.error(404, None, "Not Found")
        if (code := self.server.faults.get("status", f.path)) is not None:
            return self.send(code, {})
        headers = {"ETag": f'"{f.sha256}"'}
        if not self.server.cdn_host:
            headers["X-Repo-Commit"] = repo.sha
        self.serve_content(f, headers, self.claimed_size(f))

    def serve_content(self, f, headers, claimed_size):
        data = f.data
        if self.server.faults.get("corrupt", f.path) and data:
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
        headers = {**headers, "Content-Type": "application/octet-stream"}
        no_range = self.server.faults.get("no-range")
        if not no_range:
            headers["Accept-Ranges"] = "bytes"
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng and not no_range and self.command == "GET" else None
        if m and (m[1] or m[2]):
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else f.size - 1, f.size - 1)
            else:  # suffix range: the last N bytes
                start, end = max(0, f.size - int(m[2])), f.size - 1
            if start >= f.size or start > end:
                return self.send(416, {**headers, "Content-Range": f"bytes */{f.size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
            return self.send(206, headers, data[start:end + 1], file=f)
        self.send(200, headers, data, length=claimed_size, file=f)

    def serve_tree(self, repo, path, query, url):
        if path and path not in repo.dirs:
            return self.error(404, "EntryNotFound", f"Entry not found: {path}", {"X-Repo-Commit": repo.sha})
        recursive = query.get("recursive", "").lower() in ("true", "1")
        prefix = path + "/" if path else ""
        entries = []
        for p in sorted(set(repo.files) | set(repo.dirs)):
            if not p.startswith(prefix) or (not recursive and "/" in p[len(prefix):]):
                continue
            f = repo.files.get(p)
            if f is None:
                entries.append({"type": "directory", "oid": repo.dir_oid(p), "size": 0, "path": p})
                continue
            size = self.claimed_size(f)
            entry = {"type": "file", "oid": f.oid, "size": size, "path": p}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": size, "pointerSize": f.pointer_size}
            entries.append(entry)
        start = int(query.get("cursor") or 0) if (query.get("cursor") or "0").isdigit() else 0
        end = start + self.server.page_size
        headers = {}
        if end < len(entries):
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
            next_query = urlencode({**query, "cursor": str(end)})
            headers["Link"] = f'<http://{host}{url.path}?{next_query}>; rel="next"'
        self.json(entries[start:end], headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, repos, faults, page_size, log_path, cdn_host):
        super().__init__(("127.0.0.1", port), Handler)
        self.repos, self.faults, self.page_size, self.cdn_host = repos, faults, page_size, cdn_host
        self.log_file = open(log_path, "a", buffering=1) if log_path else None
        self.log_lock = threading.Lock()

    def handle_error(self, request, client_address):
        # A client that goes away mid-transfer (the tests kill one) is expected, not an error to print.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def log(self, line):
        if self.log_file:
            with self.log_lock:
                self.log_file.write(line + "\n")
                self.log_file.flush()
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=DIR")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--log")
    ap.add_argument("--cdn-host", help="redirect LFS files to http://HOST:PORT/lfs/... instead of a relative path")
    ap.add_argument("--fault", action="append", default=[], metavar="SPEC")
    args = ap.parse_args()
    repos = {}
    for spec in args.repo:
        repo_id, sep, folder = spec.partition("=")
        if not sep or repo_id.count("/") != 1 or not os.path.isdir(folder):
            ap.error(f"--repo wants OWNER/NAME=DIR with an existing DIR: {spec!r}")
        repos[repo_id] = Repo(repo_id, folder)
    try:
        faults = Faults(args.fault)
    except ValueError as e:
        ap.error(str(e))
    server = Server(args.port, repos, faults, max(1, args.page_size), args.log, args.cdn_host)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
