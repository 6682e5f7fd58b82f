"""The run folder: configuration, checkpoints written atomically, latest and best.

Layout (see docs/architecture.md, "Run folder"):

    RUN/config.json            model + training config, fully resolved, and the corpus
    RUN/tokenizer.json         copy of the corpus's vocabulary
    RUN/metrics.jsonl          one record per logged step / evaluation
    RUN/model.safetensors      the latest checkpoint's files (hard links into
    RUN/optimizer.pt           checkpoints/, replaced one by one, state.json last)
    RUN/state.json
    RUN/checkpoints/step_0000100/{model.safetensors, optimizer.pt, state.json}
                               (+ model_raw.safetensors with train.ema_decay)
    RUN/best/{model.safetensors, state.json}   lowest tuning loss so far

A checkpoint folder is written under a temporary name and renamed into place, so a kill
at any moment leaves every `checkpoints/step_*` folder complete; resuming reads the
newest of them, never the top-level copies.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # its error class only: nothing is unpickled here
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqlm.artefacts import record_files, verify_file
from seqlm.constants import TOKENIZER_FILE
from seqlm.errors import ConfigError, CorpusError
from seqlm.outputs import OutputError, apply_umask

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
WEIGHTS_FILE = "model.safetensors"
RAW_WEIGHTS_FILE = "model_raw.safetensors"  # the un-averaged weights (train.ema_decay)
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FORMAT = 1
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder and its parsed state.json."""

    path: Path
    step: int
    state: dict[str, Any]


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _fsync_file(path)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no storage shared between names (safetensors refuses
    shared storage; tied embeddings are written under both names)."""
    seen: set[int] = set()
    result = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        result[name] = tensor
    return result


def save_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        save_file(_unshared(tensors), str(path))
    except (SafetensorError, OSError) as err:  # a full or read-only disk
        reason = " ".join(str(err).split())[:200]
        raise OutputError(f"{path}: could not write the weights ({reason})") from None
    apply_umask(path)  # safetensors creates 0600 files; others may need to read the run
    _fsync_file(path)


def verify_against_state(path: Path) -> None:
    """Check a checkpoint file against the checksum its folder's state.json records
    (`seqlm.artefacts`: size and time by default, the full hash with `--verify`).
    Checkpoints written before checksums existed record none and are not checked."""
    state_path = path.parent / STATE_FILE
    if not state_path.is_file():
        return
    try:
        files = json.loads(state_path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError) as err:
        raise CorpusError(f"{state_path}: unreadable checkpoint state: {err}") from None
    if isinstance(files, dict) and path.name in files:
        verify_file(path, files[path.name], state_path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_file():
        verify_against_state(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CorpusError(f"{path}: weights file not found") from None
    except (SafetensorError, OSError) as err:
        raise CorpusError(f"{path}: not readable safetensors: {err}") from None


def _replace_dir(temporary: Path, final: Path) -> None:
    """Rename `temporary` to `final`, moving an existing `final` out of the way first."""
    if final.exists():
        trash = final.with_name(_TEMP_PREFIX + final.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        os.rename(temporary, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(temporary, final)


def _link_or_copy(source: Path, target: Path) -> None:
    """Point `target` at `source`'s bytes atomically (hard link, else a copy)."""
    temporary = target.with_name(_TEMP_PREFIX + target.name)
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


class RunFolder:
    """Reads and writes one run folder. Only rank 0 should call the writing methods."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best_dir(self) -> Path:
        return self.path / BEST_DIR

    # -- configuration ------------------------------------------------------------------

    def write_config(self, config: dict[str, Any], tokenizer: Path | None = None) -> None:
        """Create the folder and write config.json (and a copy of tokenizer.json)."""
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / (_TEMP_PREFIX + CONFIG_FILE)
        _write_json(temporary, config)
        os.replace(temporary, self.config_path)
        if tokenizer is not None and tokenizer.exists():
            temporary = self.path / (_TEMP_PREFIX + TOKENIZER_FILE)
            shutil.copyfile(tokenizer, temporary)
            os.replace(temporary, self.path / TOKENIZER_FILE)

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write RUN/name (recipe.json, warnings.json) atomically."""
        temporary = self.path / (_TEMP_PREFIX + name)
        _write_json(temporary, data)
        os.replace(temporary, self.path / name)
        return self.path / name

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            hint = ""
            if (self.path / "manifest.json").is_file():
                hint = "; it is a corpus folder (from seqlm ingest): train a run on it first"
            raise CorpusError(f"{self.path}: not a run folder (no {CONFIG_FILE}){hint}") from None
        except json.JSONDecodeError as err:
            raise CorpusError(f"{self.config_path}: not valid JSON: {err}") from None

    def clean_temporaries(self) -> None:
        """Remove what a killed writer left under temporary names."""
        for folder in (self.path, self.checkpoints_dir):
            if folder.is_dir():
                for leftover in folder.glob(_TEMP_PREFIX + "*"):
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(
        self,
        step: int,
        model_state: dict[str, torch.Tensor],
        optimizer_state: dict[str, Any],
        state: dict[str, Any],
        keep_last: int,
        raw_state: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write checkpoints/step_N atomically, point the top-level files at it, and
        delete all but the newest `keep_last` checkpoints. `raw_state`: with weight
        averaging, the optimizer's own weights (`model_state` is the average), kept in
        the checkpoint folder only, for resuming."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:07d}"
        final = self.checkpoints_dir / name
        temporary = self.checkpoints_dir / (_TEMP_PREFIX + name)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_weights(model_state, temporary / WEIGHTS_FILE)
        files = [WEIGHTS_FILE, OPTIMIZER_FILE]
        if raw_state is not None:
            save_weights(raw_state, temporary / RAW_WEIGHTS_FILE)
            files.append(RAW_WEIGHTS_FILE)
        torch.save(optimizer_state, temporary / OPTIMIZER_FILE)
        _fsync_file(temporary / OPTIMIZER_FILE)
        state = {
            **state,
            "format": STATE_FORMAT,
            "step": step,
            "checkpoint": f"{CHECKPOINTS_DIR}/{name}",
            "files": record_files(temporary, tuple(files)),
        }
        _write_json(temporary / STATE_FILE, state)
        _replace_dir(temporary, final)
        for file_name in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE):
            _link_or_copy(final / file_name, self.path / file_name)
        for old in self.list_checkpoints()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def save_best(self, model_state: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
        """Replace best/ with these weights (written aside, then swapped in)."""
        temporary = self.path / (_TEMP_PREFIX + BEST_DIR)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        save_weights(model_state, temporary / WEIGHTS_FILE)
        files = record_files(temporary, (WEIGHTS_FILE,))
        _write_json(temporary / STATE_FILE, {**state, "format": STATE_FORMAT, "files": files})
        _replace_dir(temporary, self.best_dir)
        return self.best_dir

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        folders = [
            p
            for p in self.checkpoints_dir.glob("step_*")
            if p.is_dir() and (p / STATE_FILE).exists() and p.name[5:].isdigit()
        ]
        return sorted(folders, key=lambda p: int(p.name[5:]))

    def read_checkpoint(self, folder: Path) -> Checkpoint:
        path = folder / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CorpusError(f"{path}: unreadable checkpoint state: {err}") from None
        if state.get("format") != STATE_FORMAT or "step" not in state:
            raise CorpusError(f"{path}: not a seqlm checkpoint state (format {STATE_FORMAT})")
        return Checkpoint(path=folder, step=int(state["step"]), state=state)

    def latest_checkpoint(self) -> Checkpoint | None:
        folders = self.list_checkpoints()
        return self.read_checkpoint(folders[-1]) if folders else None

    def best_checkpoint(self) -> Checkpoint | None:
        if (self.best_dir / STATE_FILE).exists():
            return self.read_checkpoint(self.best_dir)
        return None

    def load_optimizer(self, checkpoint: Checkpoint) -> dict[str, Any]:
        path = checkpoint.path / OPTIMIZER_FILE
        if path.is_file():
            verify_against_state(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CorpusError(f"{path}: optimizer state not found") from None
        except (RuntimeError, OSError, ValueError, EOFError, UnpicklingError) as err:
            # torch's messages run to several sentences; the first says what is wrong.
            reason = " ".join(str(err).split()).split(". ")[0][:160]
            raise CorpusError(f"{path}: unreadable optimizer state ({reason})") from None

    def load_checkpoint_weights(self, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
        return load_weights(checkpoint.path / WEIGHTS_FILE)

    def load_training_weights(self, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
        """The weights the optimizer goes on from: the raw ones where the checkpoint has
        them (weight averaging), else the model's."""
        raw = checkpoint.path / RAW_WEIGHTS_FILE
        return load_weights(raw if raw.is_file() else checkpoint.path / WEIGHTS_FILE)

    def check_fresh(self) -> None:
        """A new run may not overwrite a folder that already holds checkpoints."""
        if self.list_checkpoints():
            raise ConfigError(
                f"{self.path} already holds checkpoints; pass --resume to continue that run "
                "or choose another --out folder"
            )
