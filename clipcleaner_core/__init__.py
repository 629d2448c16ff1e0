"""CLIPCleaner: find and fix wrong labels in image datasets with CLIP (Feng et al., ACM MM 2024).

The one-call API (imported on first use, so ``python -m clipcleaner_core`` stays quick)::

    from clipcleaner_core import find_label_issues, clean
"""

__version__ = "0.1.0"
__all__ = ["find_label_issues", "clean", "__version__"]


def __getattr__(name):
    if name in ("find_label_issues", "clean"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipcleaner_core' has no attribute {name!r}")
