"""Generation with and without the KV cache: time to generate N tokens on the CPU.

Greedy decoding (temperature 0) of one sample, `--tokens` new tokens after a short
prompt, from a randomly initialised GPT of the chosen preset whose block size holds
the whole sequence (so the cache never has to re-encode a window). Each mode runs
`--repeats` times; the median is reported, and the two outputs are checked to agree
token for token. Prints a table and one JSON line.

    python benchmarks/bench_generate.py                 # micro preset, 512 tokens, 3 repeats
    python benchmarks/bench_generate.py --preset small --threads 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from seqlm.evaluation.generate import GenerationOptions, SamplingOptions, generate
from seqlm.model import GPT, preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="micro", help="model size (tiny, micro, small)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens to generate")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = args.prompt + args.tokens
    model = GPT(preset(args.preset, vocab_size=args.vocab, block_size=block)).eval()
    prompt = np.concatenate([[1], np.arange(5, 4 + args.prompt)])
    options = GenerationOptions(
        max_new_tokens=args.tokens, sampling=SamplingOptions(temperature=0), stop_at_eos=False
    )
    seconds: dict[str, list[float]] = {"cached": [], "uncached": []}
    outputs: dict[str, np.ndarray] = {}
    generate(model, prompt, GenerationOptions(max_new_tokens=4))  # warm-up
    for _ in range(args.repeats):
        for mode in ("cached", "uncached"):
            run_options = GenerationOptions(**{**vars(options), "use_cache": mode == "cached"})
            began = time.perf_counter()
            result = generate(model, prompt, run_options)
            seconds[mode].append(time.perf_counter() - began)
            outputs[mode] = result.samples[0]
    same = bool(np.array_equal(outputs["cached"], outputs["uncached"]))
    cached, uncached = (statistics.median(seconds[m]) for m in ("cached", "uncached"))
    record = {
        "benchmark": "generate",
        "device": "cpu",
        "threads": args.threads,
        "preset": args.preset,
        "parameters": model.num_parameters(),
        "prompt_tokens": args.prompt,
        "generated_tokens": args.tokens,
        "repeats": args.repeats,
        "cached_s": round(cached, 4),
        "uncached_s": round(uncached, 4),
        "cached_tokens_per_s": round(args.tokens / cached, 1),
        "uncached_tokens_per_s": round(args.tokens / uncached, 1),
        "speedup": round(uncached / cached, 2),
        "identical_tokens": same,
    }
    print(f"{'mode':<10}{'median s':>10}{'tokens/s':>10}   runs (s)")
    for mode in ("cached", "uncached"):
        runs = ", ".join(f"{s:.3f}" for s in seconds[mode])
        median = statistics.median(seconds[mode])
        print(f"{mode:<10}{median:>10.3f}{args.tokens / median:>10.1f}   {runs}")
    print(f"speedup {record['speedup']}x, identical tokens: {same}")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
