"""The cheap per-file check every file-backed loader runs before building a Dataset."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import BAD_FILE_COLUMNS
from .images import check_image_header

logger = logging.getLogger(__name__)


def screen_files(root: Path, rel_paths: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Header-check each ``root / rel_path``; return (indices of usable files, bad_files(path, reason)).

    Bad files never stop loading: they are listed with a reason and left out of the sample list.
    """
    keep, bad = [], []
    for i, rel in enumerate(rel_paths):
        reason = check_image_header(Path(root) / rel)
        if reason is None:
            keep.append(i)
        else:
            bad.append((rel, reason))
    if bad:
        logger.warning("skipped %d unreadable file(s) under %s, e.g. %s: %s", len(bad), root, *bad[0])
    table = pd.DataFrame(bad, columns=list(BAD_FILE_COLUMNS)).astype("object")
    return np.asarray(keep, dtype=np.int64), table
