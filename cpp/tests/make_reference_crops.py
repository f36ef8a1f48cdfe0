"""Reference crops for the C++ pre-processing test (ctest fixture), made with tardis_edge.geometry + cv2.

Writes, into OUT: the source frames as binary PPM (RGB) and, per case, the Python crop (PPM, RGB) and a line of
``cases.txt``::

    src.ppm crop.ppm in_w in_h has_box x y w h padding rotation_deg flip m00 m01 m02 m10 m11 m12

where ``m`` is ``tardis_edge.geometry.crop_affine`` (image -> input pixels) and the crop is
``tardis_edge.geometry.warp_image(frame, m, (in_w, in_h))``.

usage: python make_reference_crops.py SHARED_DIR OUT_DIR  (exit 77: SHARED_DIR missing and not required)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from openfield_frames import labelled_box, labelled_frames_dir, read_labels

from tardis_edge.geometry import DEFAULT_PADDING, box_from_image, box_from_xywh, crop_affine, warp_image
from tardis_edge.io import atomic_write_bytes, atomic_write_text

FRAMES = ("img0000", "img0050", "img0100")  # labelled openfield frames: mouse in different places


def write_ppm(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    atomic_write_bytes(path, f"P6\n{w} {h}\n255\n".encode() + np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


def main() -> int:
    shared, out = Path(sys.argv[1]), Path(sys.argv[2])
    project = labelled_frames_dir(shared)
    if isinstance(project, int):
        return project
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(project)
    lines = []
    for frame in FRAMES:
        bgr = cv2.imread(str(project / f"{frame}.png"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{project / frame}.png cannot be read")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        src = out / f"{frame}.ppm"
        write_ppm(src, rgb)
        x, y, bw, bh = labelled_box(labels, frame)
        cases = [
            ("whole", (256, 256), None, 0.0, False),
            ("whole_tall", (192, 256), None, 0.0, False),
            ("labelled", (256, 256), (x, y, bw, bh), 0.0, False),
            ("corner", (256, 256), (w - 60.0, -20.0, 120.0, 90.0), 0.0, False),  # half outside: constant border
            ("rotflip", (256, 256), (x, y, bw, bh), 30.0, True),  # augmentation path of crop_affine
        ]
        for name, input_wh, xywh, rotation, flip in cases:
            box = box_from_image((w, h), input_wh) if xywh is None else box_from_xywh(xywh, input_wh, DEFAULT_PADDING)
            m = crop_affine(box, input_wh, rotation_deg=rotation, flip=flip)
            crop = warp_image(rgb, m, input_wh)
            crop_path = out / f"{frame}_{name}.ppm"
            write_ppm(crop_path, crop)
            bx = xywh if xywh is not None else (0.0, 0.0, 0.0, 0.0)
            fields = [src.name, crop_path.name, *input_wh, int(xywh is not None), *bx]
            fields += [DEFAULT_PADDING, rotation, int(flip)]
            fields += [repr(float(v)) for v in m.reshape(-1)]
            lines.append(" ".join(str(f) for f in fields))
    atomic_write_text(out / "cases.txt", "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} reference crops to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
