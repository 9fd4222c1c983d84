"""``instacli serve``: a real uvicorn server on 127.0.0.1 and a real HTTP client (httpx), against a tiny trained run.

The answers must be ``instacli predict``'s, bad requests a 4xx with a one-line reason (after which
the server still answers), and concurrent requests must share forward passes.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from instacli.errors import InstacliError
from instacli.prediction import predict_folder
from instacli.serve import create_app
from instacli.settings import ServeLimits
from tests.test_pipeline import TINY_VIT, dataset, learnable_tree, trained  # noqa: F401 (session fixtures, trained once)

LIMITS = ServeLimits(max_file_mb=0.05, max_files=4, max_batch=8, max_wait_ms=20)


@contextmanager
def serving(app: object) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url(trained: Path) -> Iterator[str]:
    with serving(create_app(trained, LIMITS)) as base:
        yield base


@pytest.fixture(scope="module")
def photos(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos of each category in one flat folder (so predict names them as the uploads are named)."""
    folder = tmp_path_factory.mktemp("serve-photos")
    for category in ("animal", "landscape"):
        for f in sorted((learnable_tree / category).iterdir())[:3]:
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _same_row(served: dict, predicted: dict) -> None:
    """Equal labels and flags, numbers within 1e-6 (likes are whole counts)."""
    assert served.keys() == predicted.keys()
    for key, value in predicted.items():
        if isinstance(value, float):
            assert served[key] == pytest.approx(value, abs=1e-6), key
        else:
            assert served[key] == value, key


def test_answers_are_those_of_predict(url: str, trained: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    predict_folder(trained, photos, out, workers=0)
    expected = {row["file"]: row for row in map(json.loads, out.read_text().splitlines())}
    paths = sorted(photos.iterdir())
    together = httpx.post(f"{url}/predict", files=_files(paths[:4]), timeout=30)  # several photos, one request
    assert together.status_code == 200, together.text
    rows = together.json()["predictions"] + [httpx.post(f"{url}/predict", files=_files([p]), timeout=30).json()["predictions"][0] for p in paths[4:]]
    assert [row["file"] for row in rows] == [p.name for p in paths]
    for row in rows:
        _same_row(row, expected[row["file"]])
    assert {row["label"] for row in rows} == {"animal", "landscape"} and all(row["likes_from_defaults"] for row in rows)


def test_engagement_fields_and_json_parts_are_those_of_a_metadata_table(url: str, trained: Path, photos: Path, tmp_path: Path) -> None:
    paths = sorted(photos.iterdir())[:2]
    table = tmp_path / "meta.csv"
    table.write_text(f"file_name,comments,shares\n{paths[0].name},5,50\n{paths[1].name},900,20000\n")
    out = tmp_path / "p.jsonl"
    predict_folder(trained, photos, out, metadata=table, workers=0)
    expected = {row["file"]: row for row in map(json.loads, out.read_text().splitlines())}
    # plain fields, once per photo, in order
    fields = httpx.post(f"{url}/predict", files=_files(paths), data={"comments": ["5", "900"], "shares": ["50", "20000"]}, timeout=30)
    # a JSON part per photo
    parts = httpx.post(f"{url}/predict", files=_files(paths), data={"metadata": [json.dumps({"comments": 5, "shares": 50}),
                                                                             json.dumps({"comments": 900, "shares": 20000})]}, timeout=30)
    for answer in (fields, parts):
        assert answer.status_code == 200, answer.text
        for row in answer.json()["predictions"]:
            _same_row(row, expected[row["file"]])
            assert row["likes_from_defaults"] is False
    likes = [row["likes"] for row in fields.json()["predictions"]]
    assert likes[0] != likes[1]  # the numbers reached the model
    once = httpx.post(f"{url}/predict", files=_files(paths), data={"comments": "5", "shares": "50"}, timeout=30)  # once: for every photo
    assert once.json()["predictions"][0]["likes"] == likes[0]


def test_health_and_model(url: str, trained: Path) -> None:
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    model = httpx.get(f"{url}/model").json()
    assert model["encoder"] == "vit-scratch" and model["classes"] == ["animal", "landscape"]
    assert model["features"] == ["comments", "shares"]
    assert len(model["training"]) == 8 and all("val_loss" in epoch for epoch in model["training"])
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.parametrize(("make_request", "status", "says"), [
    (lambda p: {"files": [("files", ("notes.jpg", b"just some text", "image/jpeg"))]}, 422, "notes.jpg: unreadable: not a photo"),
    (lambda p: {"files": [("files", ("huge.png", b"\x89PNG" + bytes(200_000), "image/png"))]}, 413, "huge.png: larger than 0.05 MB"),
    (lambda p: {"files": _files([p] * 5)}, 413, "more than 4 photos"),
    (lambda p: {"files": _files([p]), "data": {"comments": "many"}}, 422, "comments is 'many', not a number"),
    (lambda p: {"files": _files([p]), "data": {"comments": "-3"}}, 422, "comments is negative"),
    (lambda p: {"files": _files([p, p]), "data": {"comments": ["1", "2", "3"]}}, 422, "comments: given 3 times for 2 photos"),
    (lambda p: {"files": _files([p]), "data": {"metadata": "{not json"}}, 422, "metadata: not JSON"),
    (lambda p: {"files": _files([p]), "data": {"metadata": "[1, 2]"}}, 422, "metadata: is list, not a JSON object"),
    (lambda p: {"files": _files([p]), "data": {"metadata": json.dumps({"shares": True})}}, 422, "shares is True, not a count"),
    (lambda p: {"files": _files([p]), "data": {"comments": "1", "metadata": json.dumps({"comments": 2})}}, 422, "given both"),
    (lambda p: {"files": _files([p]), "data": {"likes": "12"}}, 422, "unknown field 'likes'"),
    (lambda p: {"files": [("comments", (None, b"1"))]}, 422, "no photo in the request"),  # multipart, fields only
    (lambda p: {"json": {"photo": "x.jpg"}}, 415, "multipart/form-data"),
    (lambda p: {"content": b"--x\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=y"}}, 400, "malformed multipart"),
])
def test_bad_requests_get_a_one_line_4xx_and_the_server_goes_on(url: str, photos: Path, make_request, status: int, says: str) -> None:
    photo = sorted(photos.iterdir())[0]
    answer = httpx.post(f"{url}/predict", timeout=30, **make_request(photo))
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert says in detail and "\n" not in detail, detail
    assert httpx.post(f"{url}/predict", files=_files([photo]), timeout=30).status_code == 200


def test_an_unreadable_photo_beside_good_ones_gets_an_error_row(url: str, photos: Path) -> None:
    photo = sorted(photos.iterdir())[0]
    hostile = io.BytesIO()  # 1×200,000 pixels in a few hundred bytes: upscaling its short side took gigabytes
    Image.new("L", (1, 200_000)).save(hostile, "PNG")
    answer = httpx.post(f"{url}/predict", files=[*_files([photo]), ("files", ("bomb.png", hostile.getvalue(), "image/png"))], timeout=30)
    assert answer.status_code == 200, answer.text
    good, bad = answer.json()["predictions"]
    assert good["label"] in ("animal", "landscape") and not good["error"]
    assert bad["file"] == "bomb.png" and bad["label"] is None and bad["likes"] is None and "aspect ratio over 50:1" in bad["error"], bad


def test_concurrent_requests_share_forward_passes(url: str, photos: Path) -> None:
    paths = sorted(photos.iterdir())
    before = httpx.get(f"{url}/health").json()

    def one(i: int) -> int:
        return httpx.post(f"{url}/predict", files=_files([paths[i % len(paths)]]), timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(40)))
    assert codes == [200] * 40
    after = httpx.get(f"{url}/health").json()
    assert after["photos"] - before["photos"] == 40
    assert after["batches"] - before["batches"] < 40 and after["largest_batch"] > 1, after


def test_a_crowd_of_requests_decodes_one_photo_per_core_and_holds_two_uploads_per_core(trained: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request read its whole upload (up to 16 × 20 MB) and decoded it in its own thread (up to 40 at
    once; a 9,000×9,000 RGBA PNG takes about 1 GB to decode): a crowd of clients could fill the memory.
    Now at most one photo per core is decoded and two requests per core hold uploads; the rest wait, and
    every request is answered."""
    import instacli.serve

    lock, busy, most = threading.Lock(), {"decoding": 0, "uploads": 0}, {"decoding": 0, "uploads": 0}

    @contextmanager
    def counted(what: str) -> Iterator[None]:
        with lock:
            busy[what] += 1
            most[what] = max(most[what], busy[what])
        try:
            yield
        finally:
            with lock:
                busy[what] -= 1

    decode_square, received = instacli.serve.decode_square, instacli.serve.received

    def decoding(data: bytes, size: int):  # noqa: ANN202 — decode_square's own signature
        with counted("decoding"):
            time.sleep(0.05)
            return decode_square(data, size)

    async def uploads(*args: object):  # noqa: ANN202 — received's own signature
        with counted("uploads"):
            await asyncio.sleep(0.05)
            return await received(*args)

    monkeypatch.setattr(instacli.serve, "decode_square", decoding)
    monkeypatch.setattr(instacli.serve, "received", uploads)
    monkeypatch.setattr(instacli.serve, "usable_cores", lambda: 2)
    paths = sorted(photos.iterdir())
    with serving(create_app(trained, LIMITS)) as base, ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{base}/predict", files=_files([paths[i % len(paths)]]), timeout=60).status_code, range(20)))
    assert codes == [200] * 20 and most == {"decoding": 2, "uploads": 4}, most


def test_clients_stalled_mid_upload_are_cut_off_and_the_others_are_answered(trained: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clients that stop sending halfway held both upload places of a 1-core server for ever, and
    every other request waited behind them. Now an upload has a deadline: they get 408, the others an answer."""
    import instacli.serve

    monkeypatch.setattr(instacli.serve, "UPLOAD_SECONDS", 0.5)
    monkeypatch.setattr(instacli.serve, "usable_cores", lambda: 1)
    with serving(create_app(trained, LIMITS)) as base:
        port = int(base.rsplit(":", 1)[1])
        stalled = []
        for _ in range(2):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                           b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n")
            stalled.append(client)
        time.sleep(0.1)  # both places taken
        answered = httpx.post(f"{base}/predict", files=_files(sorted(photos.iterdir())[:1]), timeout=30)
        replies = []
        for client in stalled:
            client.settimeout(10)
            replies.append(client.recv(200).split(b"\r\n")[0])
            client.close()
    assert answered.status_code == 200
    assert replies == [b"HTTP/1.1 408 Request Timeout"] * 2


def test_limits_out_of_range_are_one_line_errors() -> None:
    with pytest.raises(InstacliError, match=r"--max-files 0: Input should be greater than or equal to 1"):
        ServeLimits.from_flags(max_files=0)


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path: Path, run_cli) -> None:
    result = run_cli("serve", tmp_path, "--port", "0")
    assert result.code == 2 and "not a trained run" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_port_taken_or_out_of_range_is_one_line_and_exit_2(trained: Path, run_cli) -> None:
    """A taken port was uvicorn's "ERROR: [Errno 98] …" and exit 3, after "serving … on"; --port -1 a traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", trained, "--port", port)
    assert result.code == 2 and result.stdout == "" and result.stderr.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use); choose another port or host"]
    result = run_cli("serve", trained, "--port", "-1")
    assert result.code == 2 and "Invalid value for '--port'" in result.stderr and "Traceback" not in result.stderr


def test_a_too_large_photo_is_refused_while_it_arrives() -> None:
    """The upload is cut off at the limit: an endless photo is refused after ~limit bytes were read."""
    from starlette.requests import Request

    from instacli.serve import Refused, read_upload

    chunk, sent = 2**16, []
    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="endless.jpg"\r\n\r\n'

    async def receive() -> dict:
        sent.append(chunk)
        return {"type": "http.request", "body": head if len(sent) == 1 else bytes(chunk), "more_body": True}

    request = Request({"type": "http", "method": "POST", "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}, receive)
    with pytest.raises(Refused, match="endless.jpg: larger than 1 MB") as refused:
        asyncio.run(read_upload(request, max_file_bytes=2**20, max_files=4))
    assert refused.value.status_code == 413
    assert sum(sent) <= 2**20 + 2 * chunk


def test_cli_without_the_serve_extra_names_it(trained: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed: importing it raises ImportError
    result = run_cli("serve", trained)
    assert result.code == 2 and "pip install 'instacli[serve]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_serves_until_sigterm_and_exits_143(trained: Path, photos: Path) -> None:
    """The real command in a child process: it answers, then SIGTERM ends it like every command (143, one line);
    uvicorn.run would have swallowed the signal and exited 0."""
    import signal
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "instacli", "serve", str(trained), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/predict", files=_files(sorted(photos.iterdir())[:1]), timeout=30)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in ("animal", "landscape")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 143 and f"on http://127.0.0.1:{port}" in out
    assert err.strip() == "interrupted; nothing half-written was kept", err


def test_an_ipv6_address_is_printed_in_brackets() -> None:
    from instacli.cli.serve import url

    assert url("::1", 8000) == "http://[::1]:8000" and url("127.0.0.1", 80) == "http://127.0.0.1:80"
