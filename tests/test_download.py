"""Zoo checkpoints: `cascade-rcnn download` (hash-checked, into the cache), the published weights as
the CLI's default for zoo names, and failed downloads that say which URL, why and what to do.

The "published" file is served by a local HTTP server: the project config's entry in the zoo gets
a URL on it (its name carrying the file's SHA-256 prefix, as the real zoo's names do)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import threading

import cv2
import numpy as np
import pytest
import torch

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.shapes import SHAPE_CLASSES, generate_shapes
from cascade_rcnn.engine.train import initial_weights
from cascade_rcnn.weights import checkpoint, zoo

SMALL = "cascade_mask_rcnn_r18w32_fpn_256"


class Server:
    """Serves a folder over HTTP on 127.0.0.1 and counts the requests per path."""

    def __init__(self, folder):
        self.folder = folder
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    running = Server(folder)
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CASCADE_RCNN_CACHE", str(folder))
    return folder


def publish(server, monkeypatch, name_hash: str | None = None) -> tuple[str, dict]:
    """Serve a seeded checkpoint of the project config (shapes classes) and make it the config's
    published file; returns the URL and the weights. ``name_hash`` overrides the hash in the name."""
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL).with_classes(SHAPE_CLASSES))
    folder = server.folder / "models"
    checkpoint.save(folder / "staging.pth", model)
    digest = hashlib.sha256((folder / "staging.pth").read_bytes()).hexdigest()
    name = f"small_20240101-{name_hash or digest[:8]}.pth"
    (folder / "staging.pth").rename(folder / name)
    url = f"{server.url}/models/{name}"
    monkeypatch.setitem(zoo.MODEL_ZOO, SMALL, dataclasses.replace(zoo.MODEL_ZOO[SMALL], url=url))
    return url, model.state_dict()


def image_file(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((64, 64, 3), 127, np.uint8))
    return path


# --- cascade-rcnn download -------------------------------------------------------------------------

def test_download_fetches_checks_and_then_finds_it_in_the_cache(server, cache, monkeypatch, capsys):
    url, _ = publish(server, monkeypatch)
    name = url.rsplit("/", 1)[1]
    assert main(["download", SMALL]) == 0
    out = capsys.readouterr().out
    assert f"{cache / name} (downloaded, SHA-256 checked)" in out and "1 file(s) in" in out
    assert main(["download", SMALL]) == 0
    assert f"{cache / name} (already in the cache, SHA-256 checked)" in capsys.readouterr().out
    assert server.requests == [f"/models/{name}"]


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, cache, monkeypatch, capsys):
    url, _ = publish(server, monkeypatch, name_hash="deadbeef")
    assert main(["download", SMALL]) == 1
    err = capsys.readouterr().err
    assert f"error: {url}: the download fails its hash check (SHA-256 starts " in err
    assert "the file name says deadbeef" in err and "Traceback" not in err
    assert list(cache.iterdir()) == []


def test_a_damaged_file_put_in_the_cache_by_hand_is_named(server, cache, monkeypatch, capsys):
    url, _ = publish(server, monkeypatch)
    cache.mkdir()
    (cache / url.rsplit("/", 1)[1]).write_bytes(b"half a file")
    assert main(["download", SMALL]) == 1
    assert "in the cache but fails its hash check" in capsys.readouterr().err
    assert server.requests == []


def test_download_needs_names_and_refuses_configs_without_a_file(capsys):
    assert main(["download"]) == 2
    assert "name the zoo models" in capsys.readouterr().err
    assert main(["download", "cascade_rcnn_r18w32_fpn_256"]) == 2
    assert "cascade_rcnn_r18w32_fpn_256 has no published weights" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["missing", "tls", "refused"])
def test_a_failed_download_says_which_url_why_and_how_to_fetch_it_by_hand(server, cache, monkeypatch, capsys,
                                                                          failure):
    url, _ = publish(server, monkeypatch)
    host = server.url.split("//")[1]
    broken = {"missing": url.replace("small_", "gone_"),
              "tls": url.replace(f"http://{host}", f"https://{host}"),  # TLS to a plain-HTTP server
              "refused": url.replace(host, "127.0.0.1:9")}[failure]
    monkeypatch.setitem(zoo.MODEL_ZOO, SMALL, dataclasses.replace(zoo.MODEL_ZOO[SMALL], url=broken))
    assert main(["predict", str(image_file(cache.parent)), "--model", SMALL, "--out", str(cache.parent / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    name = broken.rsplit("/", 1)[1]
    assert err.startswith(f"error: {broken}: download failed (")
    assert {"missing": "HTTP Error 404", "tls": "SSL", "refused": "Connection refused"}[failure] in err
    assert f"`curl -LO {broken}`" in err and f"save it as {cache / name}" in err
    assert not cache.exists() or list(cache.iterdir()) == []


# --- the published weights are the default for zoo names ------------------------------------------

def test_predict_uses_the_published_weights_by_default(server, cache, monkeypatch, tmp_path, capsys):
    _, state = publish(server, monkeypatch)
    seen = []
    real = cascade_rcnn.api.build_model

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(cascade_rcnn.api, "build_model", spy)
    image = image_file(tmp_path)
    for run in ("first", "second"):
        assert main(["predict", str(image), "--model", SMALL, "--out", str(tmp_path / run), "--no-draw"]) == 0
    assert "RANDOM" not in capsys.readouterr().err
    assert len(server.requests) == 1  # the second run found it in the cache
    for model in seen:
        assert model.class_names == SHAPE_CLASSES
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    assert main(["predict", str(image), "--model", SMALL, "--weights", "none", "--out", str(tmp_path / "r")]) == 0
    assert f"note: {SMALL} has RANDOM weights (--weights none)" in capsys.readouterr().err
    assert seen[-1].class_names != SHAPE_CLASSES  # the config's own classes, random weights
    assert len(server.requests) == 1


def test_evaluate_and_export_use_them_too(server, cache, monkeypatch, tmp_path, capsys):
    _, state = publish(server, monkeypatch)
    generate_shapes(tmp_path / "data", num_images=2, size=96, seed=5)
    assert main(["evaluate", "--gt-json", str(tmp_path / "data" / "annotations.json"), "--model", SMALL,
                 "--images", str(tmp_path / "data" / "images"), "--out", str(tmp_path / "r.json")]) == 0
    assert "bbox" in json.loads((tmp_path / "r.json").read_text())
    exported = []
    monkeypatch.setattr("cascade_rcnn.deploy.export.export_onnx",
                        lambda model, out, **kwargs: exported.append(model) or out)
    assert main(["export", "--model", SMALL, "--out", str(tmp_path / "m.onnx")]) == 0
    assert all(torch.equal(exported[0].state_dict()[k], v) for k, v in state.items())
    assert len(server.requests) == 1
    assert "RANDOM" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_project_configs_have_no_published_file(tmp_path, command, capsys):
    arguments = {"predict": ["predict", str(image_file(tmp_path))],
                 "evaluate": ["evaluate", "--gt-json", str(tmp_path / "gt.json"), "--images", str(tmp_path)],
                 "export": ["export", "--out", str(tmp_path / "m.onnx")]}[command]
    assert main(arguments + ["--model", SMALL]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {SMALL} has no published weights (a project config): give --weights PATH "
                   "(e.g. a training run's final.pth), or --weights none for random weights\n")


def test_python_keeps_random_weights_by_default_and_hash_checks_zoo(server, cache, monkeypatch):
    _, state = publish(server, monkeypatch)
    cascade_rcnn.build_model(SMALL)
    assert server.requests == []
    model = cascade_rcnn.build_model(SMALL, weights="zoo")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    bad_url, _ = publish(server, monkeypatch, name_hash="0badc0de")
    with pytest.raises(cascade_rcnn.CheckpointError, match="fails its hash check"):
        cascade_rcnn.build_model(SMALL, weights=bad_url)  # a zoo URL is checked however it is given


def test_train_weights_zoo_means_the_published_url(server, monkeypatch, capsys):
    url, _ = publish(server, monkeypatch)
    seen = {}
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: seen.setdefault("config", config))
    assert main(["train", "--model", SMALL, "--train-json", "t.json", "--train-images", "imgs", "--weights", "zoo"]) == 0
    assert seen["config"].weights == "zoo"  # the engine resolves it, for the Python API as well
    assert initial_weights(cascade_rcnn.get_config(SMALL), "zoo") == url
    assert initial_weights(cascade_rcnn.get_config(SMALL), "run/final.pth") == "run/final.pth"
