"""Which step's parameters a selection rule (``last`` | ``best_val``) keeps, and why."""

from __future__ import annotations

import math

from ..settings import SELECTIONS
from ..utils import AdaptationError


def select_checkpoint(history: list[dict[str, float]], rule: str) -> tuple[int, str]:
    """The step whose parameters a selection rule keeps, and why.

    Args:
        history: the validations ``{"step", "val", ...}`` in step order; the first is step 0 (the
            initial parameters), the last the final step.
        rule: ``last`` or ``best_val`` (see :class:`~lowres_clip.settings.TrainConfig`).

    Returns:
        ``(step, reason)``. ``best_val``: the trained step (> 0) with the highest score, the latest
        of equal ones; step 0 only when its score is strictly higher than every trained step's.
        Without scores (NaN: no validation split) or with ``last``: the final step.
    """
    if rule not in SELECTIONS:
        raise AdaptationError(f"Unknown selection {rule!r}; choose one of {SELECTIONS}.")
    final = history[-1]["step"]
    if rule == "last":
        return final, f"selection 'last': the final parameters (step {final})"
    trained = [h for h in history if h["step"] > 0 and not math.isnan(h["val"])]
    if not trained:
        return final, f"no validation score: the final parameters (step {final})"
    best = max(h["val"] for h in trained)
    step = max(h["step"] for h in trained if h["val"] == best)
    initial = history[0]["val"] if history[0]["step"] == 0 else float("nan")
    if not math.isnan(initial) and initial > best:
        return 0, (f"the untrained parameters (step 0, val {initial:.4f}) are strictly better than every trained "
                   f"checkpoint (best {best:.4f} at step {step})")
    return step, f"best validation score {best:.4f} at step {step} (ties go to the later step)"
