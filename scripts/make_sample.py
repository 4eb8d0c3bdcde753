"""Regenerate src/cascade_rcnn/assets/sample.png: a 320x240 picture of simple shapes."""
from pathlib import Path

import cv2
import numpy as np

rng = np.random.default_rng(7)
height, width = 240, 320
y, x = np.mgrid[0:height, 0:width]
image = np.stack([80 + 60 * x / width, 120 + 40 * y / height, 160 - 50 * x / width], axis=2)
image += rng.normal(0, 6, image.shape)
image = np.clip(image, 0, 255).astype(np.uint8)
cv2.circle(image, (80, 90), 45, (40, 40, 220), -1)
cv2.rectangle(image, (170, 40), (290, 120), (30, 200, 60), -1)
cv2.fillPoly(image, [np.array([[60, 220], [150, 220], [105, 150]])], (220, 180, 30))
cv2.ellipse(image, (235, 185), (60, 30), 20, 0, 360, (200, 60, 200), -1)
out = Path(__file__).resolve().parents[1] / "src" / "cascade_rcnn" / "assets" / "sample.png"
cv2.imwrite(str(out), image)
print(out)
