#!/usr/bin/env python3
"""Reference spoof probabilities of the JPEG stills, for Tests/Fixtures/reference_stills.tsv.

A dev tool, never run by the tests. It runs the PyTorch reference
(shared/reference/liveness_reference.py: the same model, preprocessing and softmax) on
every JPEG under golden/exif/ and samples/ (found by content: SOI marker FF D8 FF), with
the picture opened as PIL opens it (libjpeg-turbo, ISLOW DCT, fancy upsampling) and
turned upright by its EXIF orientation (ImageOps.exif_transpose, as make_golden.py does
for golden/exif/ and as `livenessd classify` does), then convert('RGB'). The whole
picture is judged, as `classify --crop full` does.

Usage: python scripts/reference_stills.py [ASSETS_ROOT] [OUTPUT_TSV]
       (defaults: ../shared relative to the repository, Tests/Fixtures/reference_stills.tsv)
Needs: torch, torchvision, pillow.
"""
import os
import sys

import PIL
import torch
from PIL import Image, ImageOps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_jpeg(path):
    with open(path, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def jpegs(root):
    found = []
    for top in ("golden/exif", "samples"):
        for directory, _, names in os.walk(os.path.join(root, top)):
            for name in names:
                path = os.path.join(directory, name)
                if os.path.isfile(path) and is_jpeg(path):
                    found.append(os.path.relpath(path, root))
    return sorted(found)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "..", "shared"))
    output = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "Tests", "Fixtures", "reference_stills.tsv")
    sys.path.insert(0, os.path.join(root, "reference"))
    import liveness_reference as ref

    torch.set_num_threads(1)
    model, _ = ref.load(os.path.join(root, "models", "face-liveness-vit", "model.pt"))
    lines = [f"# reference/liveness_reference.py (exif_transpose, whole picture); torch {torch.__version__}, "
             f"Pillow {PIL.__version__}", "# path\tspoof_probability"]
    for relative in jpegs(root):
        image = ImageOps.exif_transpose(Image.open(os.path.join(root, relative)))
        p = ref.spoof_probability(model, image)
        lines.append(f"{relative}\t{p:.6f}")
        print(lines[-1], flush=True)
    with open(output, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
