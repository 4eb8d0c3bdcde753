"""Weights from the Hugging Face Hub (hf://ORG/REPO[@REVISION][/FILE]), offline, from a local hub
cache that the test lays out the way huggingface_hub keeps it:

    HF_HUB_CACHE/models--ORG--REPO/blobs/<sha256>
                                   refs/<branch or tag>          (holds the commit hash)
                                   snapshots/<commit>/<FILE> -> ../../blobs/<sha256>

hf_hub_download(...) in offline mode (HF_HUB_OFFLINE=1) reads refs/<revision> for the commit and
returns snapshots/<commit>/<FILE> if it exists (huggingface_hub 2.4's file_download.py)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model

import cascade_rcnn
from cascade_rcnn.weights import checkpoint, hub

hub_constants = pytest.importorskip("huggingface_hub.constants")
pytest.importorskip("safetensors")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL = "cascade_mask_rcnn_r18w32_fpn_256"


def add_to_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], ref: str = "main",
                     commit: str = COMMIT) -> None:
    """Put ``files`` ({name in the repository: local file}) into ``cache`` as huggingface_hub would."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        pointer = repo / "snapshots" / commit / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache in offline mode. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
    when imported, so the in-process tests set its constants (the CLI test sets the variables);
    versions before 1.0 also copy them into file_download and utils._http when imported."""
    import importlib

    cache = tmp_path / "hub"
    cache.mkdir()
    for module in (hub_constants, importlib.import_module("huggingface_hub.file_download"),
                   importlib.import_module("huggingface_hub.utils._http")):
        for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def assert_state_equal(model, state_dict):
    own = model.state_dict()
    assert set(own) == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(own[key], value), key


def test_the_default_file_and_named_files_load_from_the_cache(tmp_path, offline_hub):
    source = tiny_model(seed=1, class_names=("cat", "dog", "emu"))
    checkpoint.save(tmp_path / "model.safetensors", source)
    other = tiny_model(seed=2)
    torch.save({"state_dict": other.state_dict(), "meta": {}}, tmp_path / "mmdet.pth")
    add_to_hub_cache(offline_hub, "org/tiny", {"model.safetensors": tmp_path / "model.safetensors",
                                               "weights/epoch_12.pth": tmp_path / "mmdet.pth"})

    model = cascade_rcnn.build_model(tiny_config(), weights="hf://org/tiny")
    assert_state_equal(model, source.state_dict())
    assert model.class_names == ("cat", "dog", "emu")
    by_commit = cascade_rcnn.build_model(tiny_config(), weights=f"hf://org/tiny@{COMMIT}/model.safetensors")
    assert_state_equal(by_commit, source.state_dict())
    nested = cascade_rcnn.build_model(tiny_config(), weights="hf://org/tiny/weights/epoch_12.pth")
    assert_state_equal(nested, other.state_dict())


def test_without_a_safetensors_file_the_default_is_model_pth_and_tags_resolve(tmp_path, offline_hub):
    source = tiny_model(seed=3)
    checkpoint.save(tmp_path / "model.pth", source)
    add_to_hub_cache(offline_hub, "org/pth-only", {"model.pth": tmp_path / "model.pth"}, ref="v1.0")
    assert_state_equal(cascade_rcnn.build_model(tiny_config(), weights="hf://org/pth-only@v1.0"), source.state_dict())


def test_not_cached_while_offline_says_so_and_how_to_fetch(offline_hub):
    with pytest.raises(cascade_rcnn.CheckpointError) as info:
        cascade_rcnn.build_model(tiny_config(), weights="hf://org/absent@v2/net.pth")
    message = str(info.value)
    assert message.startswith("hf://org/absent@v2/net.pth: no net.pth in the Hugging Face cache")
    assert str(offline_hub) in message and "HF_HUB_OFFLINE=1" in message
    assert "`hf download org/absent net.pth --revision v2`" in message and "\n" not in message
    with pytest.raises(cascade_rcnn.CheckpointError, match="no model.safetensors or model.pth in the Hugging Face"):
        cascade_rcnn.build_model(tiny_config(), weights="hf://org/absent")


def test_a_hub_file_of_another_model_gives_the_usual_key_error(tmp_path, offline_hub):
    checkpoint.save(tmp_path / "model.safetensors", tiny_model(with_mask=False))
    add_to_hub_cache(offline_hub, "org/boxes", {"model.safetensors": tmp_path / "model.safetensors"})
    with pytest.raises(cascade_rcnn.CheckpointError, match=r"model.safetensors: keys do not match .* 36 missing"):
        cascade_rcnn.build_model(tiny_config(with_mask=True), weights="hf://org/boxes")


@pytest.mark.parametrize("name", ["hf://", "hf://org", "hf://org/", "hf:///repo", "hf://org/repo@"])
def test_malformed_names(name):
    with pytest.raises(cascade_rcnn.CheckpointError, match="expected hf://ORG/REPO"):
        checkpoint.resolve(name)


def test_parse():
    assert hub.parse("hf://a/b") == hub.HubName("a/b", None, None)
    assert hub.parse("hf://a/b@main/x/y.pth") == hub.HubName("a/b", "main", "x/y.pth")


def test_without_huggingface_hub_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(cascade_rcnn.CheckpointError, match=r"hf://a/b: .* pip install \"cascade_rcnn\[hub\]\""):
        checkpoint.resolve("hf://a/b")


def test_cli_with_the_real_environment_variables(tmp_path):
    """A user's setting: HF_HUB_CACHE and HF_HUB_OFFLINE=1 in the environment, weights on the command line."""
    import cv2
    import numpy as np

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "model.safetensors",
                    cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL).with_classes(("ring", "star"))))
    add_to_hub_cache(tmp_path / "hub", "org/small", {"model.safetensors": tmp_path / "model.safetensors"})
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 127, np.uint8))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "cascade_rcnn", "predict", str(tmp_path / "a.png"), "--model", SMALL,
               "--out", str(tmp_path / "out"), "--no-draw", "--weights"]
    done = subprocess.run(command + ["hf://org/small"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "predictions.json").is_file()
    command[command.index("--out") + 1] = str(tmp_path / "out_other")  # a new run: the first's OUT is kept
    failed = subprocess.run(command + ["hf://org/other"], capture_output=True, text=True, env=env, timeout=300)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "error: hf://org/other: no model.safetensors or model.pth in the Hugging Face cache")


def test_an_unreachable_hub_is_named_with_its_reason_and_the_cache_is_tried_once(offline_hub, monkeypatch):
    from huggingface_hub.utils import LocalEntryNotFoundError

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    calls = []

    def unreachable(repo_id, filename, revision=None, local_files_only=False):
        calls.append((filename, local_files_only))
        try:
            raise ConnectionError("[Errno 111] Connection refused")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub") from cause

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    with pytest.raises(cascade_rcnn.CheckpointError) as info:
        checkpoint.resolve("hf://org/tiny")
    assert str(info.value) == (
        f"hf://org/tiny: cannot reach the Hub ([Errno 111] Connection refused), and no model.safetensors or "
        f"model.pth in the Hugging Face cache ({offline_hub}): check the connection (or HF_ENDPOINT), or run "
        "`hf download org/tiny model.safetensors` where there is network and copy that cache here")
    assert calls == [("model.safetensors", False), ("model.pth", True)]
