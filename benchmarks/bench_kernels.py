"""Time and peak memory of each kernel's reference against its fast paths.

    python benchmarks/bench_kernels.py                 # the full table (CPU; CUDA too if present)
    python benchmarks/bench_kernels.py --quick         # small shapes, a smoke run
    python benchmarks/bench_kernels.py --ops linear_cross_entropy --json out.json
    python benchmarks/bench_kernels.py --ops linear_cross_entropy --set tokens=4096

Every row runs in its own subprocess so that one implementation's memory cannot hide
another's. Each measures forward + backward (forward only for attention statistics):
`ms` is the median of `--repeats` timed runs after one warm-up; `peak MB` is the
memory the call adds above the inputs: on CPU the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs after the inputs are built; RSS sees torch's
allocations, tracemalloc does not), on CUDA `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# op -> (full shape, quick shape, implementations on CPU, extra implementations on CUDA)
CASES: dict[str, tuple[dict, dict, tuple[str, ...], tuple[str, ...]]] = {
    "linear_cross_entropy": (
        {"tokens": 8192, "vocab": 50_000, "width": 256},
        {"tokens": 2048, "vocab": 20_000, "width": 128},
        ("reference", "chunked"),
        ("triton",),
    ),
    "rms_norm": (
        {"rows": 8192, "width": 1024},
        {"rows": 1024, "width": 512},
        ("reference", "native"),
        ("triton",),
    ),
    "layer_norm": (
        {"rows": 8192, "width": 1024},
        {"rows": 1024, "width": 512},
        ("reference", "native"),
        ("triton",),
    ),
    "windowed_attention": (
        {"batch": 1, "heads": 8, "length": 2048, "width": 64, "window": 128},
        {"batch": 1, "heads": 4, "length": 512, "width": 32, "window": 64},
        ("reference", "sdpa"),
        ("flex",),
    ),
    "attention_statistics": (
        {"batch": 1, "heads": 8, "length": 2048, "width": 64},
        {"batch": 1, "heads": 4, "length": 512, "width": 32},
        ("reference", "chunked"),
        ("flex",),
    ),
}


def _cpu_memory_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _make_call(op: str, impl: str, shape: dict, device: str):
    """Inputs built now; a function that runs the op once (with backward when it has one)."""
    from seqlm import kernels

    generator = torch.Generator().manual_seed(0)

    def leaf(*size, scale=1.0):
        return (torch.randn(*size, generator=generator) * scale).to(device).requires_grad_(True)

    if op == "linear_cross_entropy":
        hidden = leaf(shape["tokens"], shape["width"])
        weight = leaf(shape["vocab"], shape["width"], scale=shape["width"] ** -0.5)
        targets = torch.randint(0, shape["vocab"], (shape["tokens"],), generator=generator)
        targets = targets.to(device)
        options = kernels.LinearCrossEntropyOptions(impl=impl)

        def call():
            hidden.grad = weight.grad = None
            kernels.linear_cross_entropy(hidden, weight, targets, options=options).backward()

        return call
    if op in ("rms_norm", "layer_norm"):
        x = leaf(shape["rows"], shape["width"])
        weight = leaf(shape["width"])
        cotangent = torch.randn(shape["rows"], shape["width"], generator=generator).to(device)
        norm = getattr(kernels, op)

        def call():
            x.grad = weight.grad = None
            norm(x, weight, impl=impl).backward(cotangent)

        return call
    size = (shape["batch"], shape["heads"], shape["length"], shape["width"])
    q, k, v = leaf(*size), leaf(*size), leaf(*size)
    if op == "windowed_attention":
        cotangent = torch.randn(*size, generator=generator).to(device)

        def call():
            q.grad = k.grad = v.grad = None
            out = kernels.windowed_attention(q, k, v, shape["window"], impl=impl)
            out.backward(cotangent)

        return call

    def call():
        with torch.no_grad():
            kernels.attention_statistics(q, k, impl=impl)

    return call


def run_child(spec: dict) -> dict:
    """Measure one (op, impl, shape, device) in this process; return its row."""
    op, impl, shape, device = spec["op"], spec["impl"], spec["shape"], spec["device"]
    torch.manual_seed(0)
    call = _make_call(op, impl, shape, device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        exact = _reset_cpu_peak()
        baseline = _cpu_memory_kb("VmRSS") * 1024
    call()  # warm-up: compilation, allocator pools
    times = []
    for _ in range(spec["repeats"]):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - baseline
        note = ""
    else:
        peak = _cpu_memory_kb("VmHWM") * 1024 - baseline
        note = "" if exact else "peak includes start-up (no clear_refs)"
    return {
        "op": op,
        "device": device,
        "impl": impl,
        "shape": "x".join(str(v) for v in shape.values()),
        "ms": 1000 * statistics.median(times),
        "peak_mb": peak / 2**20,
        "note": note,
    }


def measure(spec: dict, timeout: float) -> dict:
    """Run one row in a fresh subprocess; failures become rows that say why."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    row = {
        "op": spec["op"],
        "device": spec["device"],
        "impl": spec["impl"],
        "shape": "x".join(str(v) for v in spec["shape"].values()),
        "ms": math.nan,
        "peak_mb": math.nan,
    }
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "note": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, "note": f"failed: {last[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    header = ("op", "device", "impl", "shape", "ms", "peak MB", "vs reference", "note")
    lines = []
    reference = {(r["op"], r["device"]): r for r in rows if r["impl"] == "reference"}
    for r in rows:
        ref = reference.get((r["op"], r["device"]))
        ratio = ""
        if ref and r is not ref and ref["peak_mb"] > 0 and not math.isnan(r["peak_mb"]):
            ratio = f"{r['ms'] / ref['ms']:.2f}x time, {r['peak_mb'] / ref['peak_mb']:.3f}x mem"
        lines.append(
            (
                r["op"],
                r["device"],
                r["impl"],
                r["shape"],
                f"{r['ms']:.1f}",
                f"{r['peak_mb']:.1f}",
                ratio,
                r.get("note", ""),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-|-".join("-" * w for w in widths))
    out += [
        " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--ops", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="override one shape entry, e.g. --set tokens=4096 (applies to every op that has it)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="measure on this device only (default: cpu, then cuda when a GPU is available)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--set wants NAME=INT, not {item!r}")
        overrides[name] = int(value)
    if args.device:
        devices = [args.device]
    else:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for op in args.ops:
        full, quick, cpu_impls, cuda_extra = CASES[op]
        for device in devices:
            impls = cpu_impls + (cuda_extra if device == "cuda" else ())
            for impl in impls:
                spec = {
                    "op": op,
                    "impl": impl,
                    "shape": {
                        name: overrides.get(name, size)
                        for name, size in (quick if args.quick else full).items()
                    },
                    "device": device,
                    "repeats": args.repeats,
                }
                rows.append(measure(spec, args.timeout))
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
