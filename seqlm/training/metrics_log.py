"""`metrics.jsonl`: one JSON object per line, appended as training goes, plus optional
TensorBoard scalars.

Each record has `step`, `kind` (`train`, `eval` or `final`) and numbers. After a crash,
records written past the last checkpoint are replayed by the resumed run, so resuming
first drops every record with a step beyond the checkpoint's (`truncate_after`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from seqlm.errors import ConfigError, CorpusError


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl; a torn last line (killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise CorpusError(f"{path}, row {number}: not a JSON record") from None
        records.append(record)
    return records


class MetricsLog:
    """Appends records to `path` (and TensorBoard when asked); a no-op when not `enabled`
    (processes other than rank 0)."""

    def __init__(
        self, path: str | Path, *, enabled: bool = True, tensorboard_dir: str | Path | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._writer = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "train.tensorboard needs the `tensorboard` package (pip install 'seqlm[tensorboard]')"
                ) from None
            self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        """Keep only records up to `step`, and no `final` record (the resumed run writes
        its own); rewritten atomically."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            r
            for r in read_metrics(self.path)
            if int(r.get("step", 0)) <= step and r.get("kind") != "final"
        ]
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
        os.replace(temporary, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _json_safe(v) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self._writer is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, int | float):
                    self._writer.add_scalar(f"{kind}/{key}", value, record.get("step", 0))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
