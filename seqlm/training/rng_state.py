"""Random-number-generator states as JSON-safe values, for `state.json`.

torch's generator states are byte tensors (base64 here); numpy's legacy global state is
a tuple holding a uint32 array (a list here); Python's `random` state is nested tuples
of ints (lists here). Nothing is pickled.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from seqlm.errors import CorpusError


def _bytes_to_text(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _text_to_bytes(text: str) -> torch.Tensor:
    raw = np.frombuffer(base64.b64decode(text.encode("ascii")), dtype=np.uint8)
    return torch.from_numpy(raw.copy())


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and every CUDA device), numpy and Python RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": _bytes_to_text(torch.get_rng_state()),
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_bytes_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set every RNG back to a state from `capture_rng_state`."""
    try:
        torch.set_rng_state(_text_to_bytes(state["torch"]))
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                numpy_state["kind"],
                np.asarray(numpy_state["keys"], dtype=np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        python_state = state["python"]
        random.setstate(
            (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
        )
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = [_text_to_bytes(s) for s in state["cuda"]]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CorpusError(f"invalid RNG state in state.json: {err}") from None


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed for one step of one process: a pure function, so dropout and any
    other randomness in a step replays exactly after a resume, on every process."""
    mixed = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    return int(mixed[0]) << 32 | int(mixed[1])
