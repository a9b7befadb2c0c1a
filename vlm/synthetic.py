"""A small synthetic COCO-like image set: coloured shapes on plain backgrounds, five captions each,
written as a Karpathy split JSON + image folder (the layout the captioning runner reads)."""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")


def _draw(shape: str, color, bg, size: int, rng: random.Random) -> Image.Image:
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    m = rng.randint(size // 8, size // 4)
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=color)
    elif shape == "square":
        d.rectangle(box, fill=color)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=color)
    return im


def make_synthetic_coco(out: str | Path, n_train: int = 40, n_test: int = 8, size: int = 48,
                        seed: int = 0) -> tuple[Path, Path]:
    """``(karpathy_json, image_root)``; images under ``image_root/synth/``; splits train and test."""
    out = Path(out)
    (out / "synth").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images = []
    for i in range(n_train + n_test):
        shape, color, bg = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(list(BACKGROUNDS))
        name = f"synth_{i:04d}.png"
        _draw(shape, COLORS[color], BACKGROUNDS[bg], size, rng).save(out / "synth" / name)
        caps = [f"a {color} {shape} on a {bg} background", f"a picture of a {color} {shape}",
                f"a {color} {shape}", f"a small {color} {shape} on {bg}", f"one {color} {shape} in the image"]
        images.append({"filepath": "synth", "filename": name, "imgid": i, "cocoid": 100000 + i,
                       "split": "train" if i < n_train else "test",
                       "sentences": [{"raw": c, "tokens": c.split()} for c in caps]})
    path = out / "karpathy_synth.json"
    path.write_text(json.dumps({"dataset": "synthetic-coco", "images": images}, indent=1))
    return path, out


def make_questions(karpathy_json: str | Path, out: str | Path, n: int = 4) -> Path:
    """A reasoning questions file over the first ``n`` test images of a synthetic set."""
    data = json.loads(Path(karpathy_json).read_text())
    root = Path(karpathy_json).parent
    tests = [im for im in data["images"] if im["split"] == "test"][:n]
    qs = ["What color is the shape?", "What shape is in the picture?", "Is the background dark or light?",
          "Describe the image."]
    items = [{"id": f"q{i}", "image": str((root / im["filepath"] / im["filename"]).resolve()),
              "question": qs[i % len(qs)]} for i, im in enumerate(tests)]
    path = Path(out)
    path.write_text(json.dumps(items, indent=1))
    return path
