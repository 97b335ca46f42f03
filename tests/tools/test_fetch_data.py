"""tools/fetch_data.py against a real HTTP server on 127.0.0.1: download, resume, MD5 mismatch, offline."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "fetch_data.py"
CONTENT = b"index\tquestion\n" + b"".join(b"%d\tquestion %d\n" % (i, i) for i in range(5000))
MD5 = hashlib.md5(CONTENT).hexdigest()


class Server(ThreadingHTTPServer):
    """Serves `files` (path -> bytes), honouring `Range: bytes=N-` unless `ranges` is False; records each request's
    Range header."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.ranges, self.seen = files, ranges, []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.server.files.get(self.path)
        asked = self.headers.get("Range")
        self.server.seen.append(asked)
        if body is None:
            self.send_error(404)
            return
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and self.server.ranges else 0
        if start >= len(body) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes], ranges: bool = True) -> Server:
        server = Server(files, ranges)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def mirror(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_download_lands_under_its_name_with_the_md5_checked(serve, tmp_path):
    server = serve({"/MMStar.tsv": CONTENT})
    done = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "MMStar.tsv").read_bytes() == CONTENT and not (tmp_path / "MMStar.tsv.part").exists()
    assert "downloaded, MD5" in done.stdout and server.seen == [None]
    again = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert again.returncode == 0 and "already there" in again.stdout and server.seen == [None]


def test_a_partial_download_is_resumed_with_a_range_request(serve, tmp_path):
    server = serve({"/POPE.tsv": CONTENT})
    (tmp_path / "POPE.tsv.part").write_bytes(CONTENT[:1000])
    done = fetch("POPE", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert done.returncode == 0, done.stderr
    assert server.seen == ["bytes=1000-"] and (tmp_path / "POPE.tsv").read_bytes() == CONTENT


def test_a_server_that_ignores_ranges_restarts_the_file(serve, tmp_path):
    server = serve({"/POPE.tsv": CONTENT}, ranges=False)
    (tmp_path / "POPE.tsv.part").write_bytes(b"stale bytes of another file")
    done = fetch("POPE", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "POPE.tsv").read_bytes() == CONTENT


def test_a_wrong_md5_is_refused_and_leaves_no_file(serve, tmp_path):
    server = serve({"/MMStar.tsv": CONTENT + b"tampered"})
    done = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert done.returncode == 1
    assert f"is not the published {MD5}" in done.stderr and f"{mirror(server)}/MMStar.tsv" in done.stderr
    assert len(done.stderr.strip().splitlines()[-1:]) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "MMStar.tsv").exists() and not (tmp_path / "MMStar.tsv.part").exists()


def test_the_published_md5_is_the_default(serve, tmp_path):
    server = serve({"/MMStar.tsv": CONTENT})
    done = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server))
    assert done.returncode == 1 and "e1ecd2140806c1b1bbf54b43372efb9e" in done.stderr


def test_an_unreachable_host_is_one_line_per_file(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = fetch("MMStar", "POPE", "--root", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("fetch_data.py: error:")]
    assert len(lines) == 2 and all(f"cannot reach 127.0.0.1:{port}" in line and "offline?" in line for line in lines)


def test_a_file_in_place_with_another_md5_needs_force(serve, tmp_path):
    server = serve({"/MMStar.tsv": CONTENT})
    (tmp_path / "MMStar.tsv").write_bytes(b"index\n1\n")
    done = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5)
    assert done.returncode == 1 and "--force" in done.stderr and server.seen == []
    forced = fetch("MMStar", "--root", str(tmp_path), "--mirror", mirror(server), "--md5", MD5, "--force")
    assert forced.returncode == 0 and (tmp_path / "MMStar.tsv").read_bytes() == CONTENT


def test_a_name_without_a_published_file_says_how_to_get_it(tmp_path):
    done = fetch("RefCOCO_val", "NoSuchSet", "--root", str(tmp_path))
    assert done.returncode == 2
    assert "RefCOCO_val: not published by VLMEvalKit" in done.stderr and "convert_to_tsv.py" in done.stderr
    assert "NoSuchSet: not published" in done.stderr
