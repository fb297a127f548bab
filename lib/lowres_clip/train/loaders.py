"""Seeded data loaders (worker seeds, an endless cycle) and the labels of a dataset."""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels ``[N]`` of a dataset (from ``.samples`` when present, else by iterating it)."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, sampler=None) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=num_workers, drop_last=False,
        generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
        persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
    )
