"""Training records: JSON lines, TensorBoard (when installed), and a PNG of the curves."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .evaluate import format_table

METRICS = "metrics.jsonl"
CURVES = "curves.png"


class TrainLog:
    """Writes ``metrics.jsonl`` (one object per logged step or evaluation) under ``out_dir``:
    continued when ``append`` (a resumed run), else started afresh, with no old ``curves.png``.

    Only the main process logs (``enabled``); the others keep silent.
    """

    def __init__(self, out_dir: Path, enabled: bool = True, append: bool = False):
        self.enabled = enabled
        self.out_dir = out_dir
        self.history: list[dict] = []
        self.writer = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if not append:
            (out_dir / CURVES).unlink(missing_ok=True)
        self.jsonl = (out_dir / METRICS).open("a" if append else "w")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            self.writer = None

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        self._record({"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, iteration)

    def evaluation(self, iteration: int, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        self._record({"iteration": iteration, "epoch": epoch, "eval": metrics})
        self.message(f"epoch {epoch} evaluation:\n{format_table(metrics)}")
        if self.writer is not None:
            for iou_type, values in metrics.items():
                for key, value in values.items():
                    self.writer.add_scalar(f"val_{iou_type}/{key}", value, iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
        if self.history:
            plot_curves(self.history, self.out_dir / CURVES)

    def _record(self, row: dict) -> None:
        if not self.enabled:
            return
        self.history.append(row)
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss components over iterations (left) and validation AP over epochs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row for row in history if "loss" in row]
    evals = [row for row in history if "eval" in row]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [k for k in steps[0] if k == "loss" or k.endswith(("_cls", "_box", "_mask"))] if steps else []
    for key in keys:
        left.plot([r["iteration"] for r in steps], [r[key] for r in steps], label=key,
                  linewidth=2 if key == "loss" else 1)
    left.set_xlabel("iteration")
    left.set_yscale("log")
    left.set_title("training loss")
    if keys:
        left.legend(fontsize=7, ncol=2)
    for iou_type in (evals[0]["eval"] if evals else {}):
        for metric in ("AP", "AP50", "AP70", "AP90"):
            right.plot([r["epoch"] for r in evals], [r["eval"][iou_type][metric] for r in evals],
                       marker="o", label=f"{iou_type} {metric}")
    right.set_xlabel("epoch")
    right.set_title("validation AP")
    if evals:
        right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
