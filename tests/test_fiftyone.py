"""Detections as FiftyOne labels, and dataset.apply_model with our detector, with the real package.

FiftyOne is not in the test extra (about 95 packages, and a MongoDB it downloads when it is
built): these tests skip without it. apply_model runs in a child process with its database in a
temporary folder, so the database server it starts ends with that process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_confident, tiny_model

pytest.importorskip("fiftyone.core.labels")
from cascade_rcnn.outputs.fiftyone_adapter import to_fiftyone


def test_detections_become_relative_boxes_names_scores_and_cropped_masks():
    model = tiny_model(True, seed=1)
    make_confident(model, label=2, mask_logit=3.0)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ours = model.predict([image], score_thr=0.0)[0]
    labels = to_fiftyone(ours)
    assert len(labels.detections) == len(ours) > 0
    for found, box, score, label in zip(labels.detections, ours.boxes.tolist(), ours.scores.tolist(),
                                        ours.labels.tolist()):
        x1, y1, x2, y2 = box
        assert found.label == "abc"[label] and found.confidence == pytest.approx(score)
        assert found.bounding_box == pytest.approx([x1 / 90, y1 / 70, (x2 - x1) / 90, (y2 - y1) / 70])
        assert found.mask.dtype == bool
        assert found.mask.shape == (round(y2) - round(y1), round(x2) - round(x1))
    assert all(d.mask is None for d in to_fiftyone(tiny_model(False).predict([image])[0]).detections)


APPLY_MODEL = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from PIL import Image
    import fiftyone as fo
    from conftest import make_confident, tiny_model
    from cascade_rcnn.outputs.fiftyone_adapter import fiftyone_model

    model = tiny_model(True, seed=1)
    make_confident(model, label=1, mask_logit=3.0)
    paths = []
    for index, size in enumerate([(70, 90), (50, 64)]):
        path = f"{{sys.argv[1]}}/image{{index}}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
        paths.append(path)
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=path) for path in paths])
    dataset.apply_model(fiftyone_model(model), label_field="cascade", confidence_thresh=0.1)
    for sample, path in zip(dataset, paths):
        expected = model.predict([path], score_thr=0.1)[0]
        got = sample["cascade"].detections
        assert len(got) == len(expected) > 0, (len(got), len(expected))
        assert [d.label for d in got] == [expected.class_names[i] for i in expected.labels.tolist()]
        assert np.allclose([d.confidence for d in got], expected.scores.numpy())
        assert all(d.mask is not None for d in got)
    print("apply_model ok", [len(s["cascade"].detections) for s in dataset])
""")


def test_apply_model_on_a_dataset(tmp_path):
    tests = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "apply.py"
    script.write_text(APPLY_MODEL.format(tests=tests))
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "apply_model ok" in done.stdout
