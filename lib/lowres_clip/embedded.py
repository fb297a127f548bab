"""Placeholder: the embedded CPU model (EfficientNet-Lite0 + MiniLM) is built here (issue 8)."""

EMBEDDED_MODEL = "EffLite0-MiniLM"


def load_embedded(device=None):
    raise NotImplementedError("embedded model not built yet")
