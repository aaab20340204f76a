"""Publishing a checked export: metadata first, then an atomic swap into place."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def publish(tmp: Path, output: Path, meta: dict) -> dict:
    """A checked export in `tmp`: writes its deepseek_export.json, then swaps it in for `output`."""
    (tmp / "deepseek_export.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return meta
