"""Make the demo's initial trunk (src/cascade_rcnn/engine/demo_trunk.pth): the demo's model trained
from scratch on 1000 generated shapes images of seed 2 (1250 AdamW steps, about 10 minutes on 2
CPU cores), its backbone, FPN and RPN kept in float16.

    python tools/make_demo_trunk.py --work runs/trunk [--out src/cascade_rcnn/engine/demo_trunk.pth]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cascade_rcnn.engine.demo import DEMO_TRUNK, make_trunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a new or empty folder for the data and the training run")
    parser.add_argument("--out", default=str(DEMO_TRUNK))
    args = parser.parse_args()
    print(make_trunk(Path(args.out), Path(args.work)))


if __name__ == "__main__":
    main()
