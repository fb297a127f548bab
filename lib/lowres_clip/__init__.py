"""lowres_clip: adapting CLIP to low-resource, long-tailed vision, and explaining where it fails."""

__version__ = "0.1.0"
