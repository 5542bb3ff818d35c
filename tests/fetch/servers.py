"""Real servers on 127.0.0.1 for the fetch tests (no QGIS): a STAC API (``rustac serve``, its
in-memory backend) and an HTTP file server that honours Range requests (206), counts what it
serves, and can demand a Planetary-Computer-style signing token (its /token/{collection}
endpoint hands one out; a wrong one gets 403)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RUSTAC = shutil.which("rustac") or str(Path(os.sys.executable).parent / "rustac")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FileServer:
    """Serves ``root``; GET with Range -> 206 and only those bytes.  ``log`` holds one
    (method, path, range header, status, bytes sent) per request."""

    def __init__(self, root: Path, token: str | None = None, issue_token: str | None = None, delay: float = 0.0):
        self.root = Path(root)
        self.token = token  # required query value of 'sig' on file requests (None: none needed)
        self.issue_token = issue_token if issue_token is not None else token  # what /token/ hands out
        self.delay = delay
        self.log: list = []
        self.lock = threading.Lock()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _record(self, status, n):
                with srv.lock:
                    srv.log.append((self.command, self.path, self.headers.get("Range"), status, n))

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self._record(status, len(body) if self.command != "HEAD" else 0)

            def do_HEAD(self):  # noqa: N802
                self.do_GET()

            def do_GET(self):  # noqa: N802
                if srv.delay:
                    time.sleep(srv.delay)
                url = urlsplit(self.path)
                m = re.match(r"^/token/([\w.-]+)$", url.path)
                if m:
                    body = json.dumps({"token": f"sig={srv.issue_token}", "msft:expiry": "2099-01-01T00:00:00Z"})
                    return self._send(200, body.encode(), {"Content-Type": "application/json"})
                if srv.token is not None and parse_qs(url.query).get("sig") != [srv.token]:
                    return self._send(403, b"AuthenticationFailed: signature expired")
                f = (srv.root / url.path.lstrip("/")).resolve()
                if srv.root.resolve() not in f.parents or not f.is_file():
                    return self._send(404, b"not found")
                size = f.stat().st_size
                rng = self.headers.get("Range")
                m = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
                with open(f, "rb") as fh:
                    if m:
                        a = int(m.group(1))
                        b = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                        if a >= size:
                            return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                        fh.seek(a)
                        return self._send(206, fh.read(b - a + 1), {"Content-Range": f"bytes {a}-{b}/{size}",
                                                                     "Accept-Ranges": "bytes",
                                                                     "Content-Type": "image/tiff"})
                    return self._send(200, fh.read(), {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def files_log(self):
        return [e for e in self.log if not e[1].startswith("/token/")]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class StacServer:
    """``rustac serve`` on a free loopback port, loaded with the given collection and item dicts."""

    def __init__(self, folder: Path, collections: list[dict], items: list[dict], timeout: float = 30.0):
        folder.mkdir(parents=True, exist_ok=True)
        hrefs = []
        for c in collections:
            p = folder / f"collection_{c['id']}.json"
            p.write_text(json.dumps(c))
            hrefs.append(str(p))
        p = folder / "items.json"
        p.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        hrefs.append(str(p))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = open(folder / "rustac.log", "wb")
        self.proc = subprocess.Popen([RUSTAC, "serve", "--addr", f"127.0.0.1:{self.port}", *hrefs],
                                     stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/conformance", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rustac serve did not come up: {(folder / 'rustac.log').read_text()[-500:]}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logfile.close()


class QueryProxy:
    """A STAC API with the query extension (``eq`` only) in front of an upstream one without it
    (rustac's in-memory backend): it advertises the conformance class, takes ``query`` out of
    POST /search bodies (recording it in ``queries``), forwards the rest and applies the query to
    the features that come back.  For testing the client's server-side filter path."""

    QUERY = "https://api.stacspec.org/v1.0.0/item-search#query"

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.queries: list = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self, body=None):
                req = urllib.request.Request(srv.upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.loads(r.read().decode("utf-8"))

            def _reply(self, doc):
                data = json.dumps(doc).replace(srv.upstream, srv.url).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                doc = self._forward()
                if "conformsTo" in doc:
                    doc["conformsTo"] = doc["conformsTo"] + [QueryProxy.QUERY]
                self._reply(doc)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                query = body.pop("query", None)
                doc = self._forward(json.dumps(body).encode())
                if query:
                    srv.queries.append(query)
                    doc["features"] = [f for f in doc.get("features", [])
                                       if all(str(f["properties"].get(k)) == str(v["eq"]) for k, v in query.items())]
                    doc["numberReturned"] = len(doc["features"])
                self._reply(doc)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
