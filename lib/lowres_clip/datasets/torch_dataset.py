"""The torch view of a split: :class:`ImageDataset` (PIL imported when an image is read)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .base import DatasetError, Sample


class ImageDataset:
    """A torch ``Dataset`` over samples: returns ``(image_tensor, label, index)``.

    A missing or unreadable image raises :class:`DatasetError` naming the file.
    """

    def __init__(self, image_root: str | Path, samples: Sequence[Sample], transform: Callable | None = None):
        self.image_root = Path(image_root)
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.image_root / self.samples[i].path
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"Cannot read image '{path}': {exc}") from exc

    def __getitem__(self, i: int):
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.samples[i].label, i
