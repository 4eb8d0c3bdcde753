#!/usr/bin/env python
"""Measure the float-noise figures behind tests/test_detectron2_losses.py's bounds on this CPU, as
JSON lines: each loss term's relative difference from Detectron2's, for the exact and the fast
path and each case, against every Detectron2 losses file given (default: the shared AVX2 file and
this repository's AVX-512 copy), and between the files themselves (Detectron2 across CPU kinds).
Run it as it is, and with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to round as an AVX2
CPU:

    python tools/detectron2_loss_margins.py [FILE ...]

``--copy FULL SMALL`` writes the small per-kind copy the tests read from Detectron2's full file:
its meta, and per case the losses, events, sampling and sha256 digests of the RPN proposals and
of each stage's RoIs with their labels (the batch itself is the shared file's).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_detectron2_losses as golden  # noqa: E402  (the test's own helpers: one definition of each)


def copy(full: Path, small: Path) -> None:
    data = torch.load(full, weights_only=True)
    meta = dict(data["meta"], source=full.name, source_sha256=hashlib.sha256(full.read_bytes()).hexdigest(),
                note="small copy: losses, events, sampling and digests only (tools/detectron2_loss_margins.py --copy)")
    cases = {name: {"losses": case["losses"], "events": case["events"], "sampling": case["sampling"],
                    "digests": golden.reference_digests(case)} for name, case in data["cases"].items()}
    small.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "cases": cases}, small)
    print(f"{small}: {small.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--copy", nargs=2, type=Path, metavar=("FULL", "SMALL"))
    args = parser.parse_args()
    if args.copy:
        copy(*args.copy)
        return
    torch.set_num_threads(2)
    files = args.files or [path for path in golden.KIND_FILES.values() if path.is_file()]
    references = {path.name: torch.load(path, weights_only=True)["cases"] for path in files}
    print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))
    names = list(references)
    for first, second in zip(names, names[1:]):
        for case in golden.CASES:
            errors = golden.relative_errors(references[first][case]["losses"], references[second][case]["losses"])
            worst = max(errors, key=errors.get)
            print(json.dumps({"files": [first, second], "case": case, "loss_rel": errors[worst], "term": worst}))
    model, cases = golden.golden_model(), torch.load(golden.LOSSES, weights_only=True)["cases"]
    for exact in (True, False):
        for case in golden.CASES:
            ours = golden.training_run(model, cases[case], exact)["losses"]
            for name, reference in references.items():
                errors = golden.relative_errors(ours, reference[case]["losses"])
                worst = max(errors, key=errors.get)
                print(json.dumps({"golden": name, "case": case, "path": "exact" if exact else "fast",
                                  "loss_rel": errors[worst], "term": worst,
                                  "per_term": {k: float(f"{e:.3g}") for k, e in errors.items()}}))


if __name__ == "__main__":
    main()
