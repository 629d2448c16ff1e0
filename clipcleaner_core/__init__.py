"""CLIPCleaner: find and fix wrong labels in image datasets with CLIP (Feng et al., ACM MM 2024)."""

__version__ = "0.1.0"
