"""`bench_train.py --long`: one training step at long contexts, dense mask vs block-wise.

    python benchmarks/bench_train.py --long                          # T = 1k, 4k, 8k, 16k
    python benchmarks/bench_train.py --long --contexts 1024,8192 --repeats 3 --json out.json
    python benchmarks/bench_train.py --long --checkpoint sublayers   # both modes checkpointed

The batch is real: the MIMIC-IV demo (`../shared/data/clinical/mimic-iv-demo-meds`)
ingested with the clinical defaults into a temporary folder (or `--corpus`), read by
seqlm's packed loader at context T with `batch_tokens / T` rows, and the first step
whose rows hold packed subjects (so the model gets document ids) is used (`layout`
"loader"); where the loader packs nothing (T = 1,024: all but one train subject are
longer) the rows are train subjects end to end, cut at T ("stream"). Both modes
train the same model (2 layers x 128 wide, 4 heads, rotary) with the same options on
that same batch: the model's default loss `auto` (at these sizes the chunked linear +
cross-entropy; `--loss-impl` for another), the lean MLP of
`seqlm.training.efficient.long_context_memory` (`--plain-mlp` for the model's own),
and with `--checkpoint blocks` activation checkpointing of whole blocks, with
`--checkpoint sublayers` `seqlm.training.efficient.sublayer_checkpoint` (each sublayer
keeps only its input; attention keeps its kernel's output; the MLP runs in token
chunks; the loss in chunks of 2^20 logits; glibc's mmap threshold fixed at 1 MiB, in
both modes, set before the warm-up, with the loss's and the MLP chunks' tensors from
glibc's heap, `projected_attention.heap_allocations`; where attention is block-wise, a Pre-LN block
goes through `seqlm.kernels.projected_attention`, which is what the block-wise path
is now and what the trainer attaches: `train.memory_checkpoint`). The modes differ
only in the attention path:

- `dense`: the mask as the model built it before block-wise attention existed (a dense
  (B, 1, T, T) boolean tensor from `dense_attention_mask`, straight into SDPA);
- `blockwise`: the model as it is (a `LazyAttentionMask`, attention per document
  segment through the dispatcher).

Every measurement is a fresh subprocess on one thread: AdamW's state is allocated
first (a zero-gradient step), a 64-token forward and backward warms the libraries up,
the RSS high-water mark is reset (/proc/self/clear_refs),
then one step (forward, backward, AdamW) is timed. `peak_mb` is the process's RSS
high-water mark during the step minus its RSS just before it: what the step adds on
top of the fixed baseline (Python, torch, the corpus, the model, AdamW's state and
the batch, all allocated before), the same measure in both modes. RSS is what the
machine has to find, so it includes what glibc's allocator keeps after frees
(fragmentation), not only live tensors; tokens/s is B x T over the step's wall time
(`cpu_s` is its process time, and `cpu_speedup` compares tokens per CPU second, the
figure that load from other processes disturbs least). Run by hand, the worker with
mode `blockwise-live` or `dense-live` reports the step's live tensor peak from torch's
profiler instead (`live_step`: allocator-independent), e.g.
`python benchmarks/long_step.py CORPUS 8192 blockwise-live 16384 - auto sublayers 1`. Medians over `--repeats` subprocesses. The first repeat
of each mode also saves the loss and gradients, and the row reports their largest
difference between the modes. Two more subprocesses per context measure one
attention call alone (forward and backward, q/k/v of the model's shape): the dense
mask into SDPA against `masked_attention` with the lazy mask (`attention_peak_mb`).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

MIMIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinical" / "mimic-iv-demo-meds"
LONG_SHAPE = {"layers": 2, "heads": 4, "dim": 128}
MODES = ("dense", "blockwise")


def build_mimic_corpus(folder: Path) -> Path:
    from seqlm.ingest import ingest

    if not MIMIC.is_dir():
        raise SystemExit(f"MIMIC-IV demo not found under {MIMIC}")
    ingest("meds", [MIMIC], folder)
    return folder


def _memory_kb() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}


def stream_batch(corpus, context: int, rows: int):
    """Train subjects end to end, cut into rows of T (stream packing), doc ids per subject."""
    import numpy as np
    import torch

    from seqlm.corpus.loader import Batch
    from seqlm.model.positions import document_positions

    index = corpus.index.filter(corpus.index["split"] == "train")
    offsets, lengths = index["offset"].to_numpy(), index["length"].to_numpy()
    tokens = np.concatenate(
        [corpus.tokens[o : o + n] for o, n in zip(offsets, lengths, strict=True)]
    )
    subject = np.repeat(np.arange(len(lengths)), lengths)
    need = rows * (context + 1)
    idx = torch.from_numpy(tokens[:need].astype(np.int64)).view(rows, context + 1)
    docs = torch.from_numpy(subject[:need]).view(rows, context + 1)
    targets = torch.where(docs[:, 1:] == docs[:, :-1], idx[:, 1:], -100)
    doc_ids = docs[:, :-1].contiguous()
    return Batch(
        idx=idx[:, :-1].contiguous(),
        targets=targets,
        doc_ids=doc_ids,
        position_ids=document_positions(doc_ids),
        n_targets=int((targets != -100).sum()),
        n_tokens=rows * context,
    )


def packed_batch(corpus_path: Path, context: int, batch_tokens: int):
    """The first micro-batch of seqlm's packed loader whose rows carry document ids.

    Where no train subject is short enough to share a row (T = 1,024 on the MIMIC
    demo), the loader gives no document ids; then the rows are stream-packed
    subjects instead (`stream_batch`), so both modes still see document masks.
    """
    from seqlm.corpus import load_corpus
    from seqlm.corpus.loader import BatchLoader, LoaderConfig

    corpus = load_corpus(corpus_path)
    rows = max(1, batch_tokens // context)
    loader = BatchLoader.from_corpus(
        corpus, "train", LoaderConfig(context=context, batch_size=rows)
    )
    for _ in range(min(200, loader.epoch_rows() // rows + 1)):
        batch = loader.next_step().micro[0]
        if batch.doc_ids is not None:
            return corpus, batch, "loader"
    return corpus, stream_batch(corpus, context, rows), "stream"


def long_worker(
    corpus_path: Path,
    context: int,
    mode: str,
    batch_tokens: int,
    save: Path | None,
    options: dict,
    live: bool = False,
):
    """One measured training step in this process; prints its figures as JSON.

    With `live`, the step runs under torch's profiler instead and the figures are its
    live tensor peak (`live_step`), not RSS or time."""
    import torch

    import seqlm.model.gpt as gpt_module
    from seqlm.kernels.lazy_mask import dense_attention_mask
    from seqlm.model import GPT, preset
    from seqlm.training.efficient.long_context_memory import checkpointed_blocks, lean_mlp
    from seqlm.training.efficient.sublayer_checkpoint import checkpointed_sublayers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    corpus, batch, layout = packed_batch(corpus_path, context, batch_tokens)
    if mode == "dense":

        def dense_mask(seq_len, *, doc_ids=None, span=None, device=None):
            return dense_attention_mask(seq_len, doc_ids, span, device)

        gpt_module.attention_mask = dense_mask
    config = preset(
        "micro",
        vocab_size=corpus.vocab_size,
        block_size=context,
        n_layer=LONG_SHAPE["layers"],
        n_head=LONG_SHAPE["heads"],
        n_embd=LONG_SHAPE["dim"],
        positions="rotary",
        dropout=0.0,
        loss_impl=options["loss_impl"],
    )
    model = GPT(config)
    with ExitStack() as stack:
        if options["lean_mlp"]:
            stack.enter_context(lean_mlp(model))
        if options["checkpoint"] == "blocks":
            stack.enter_context(checkpointed_blocks(model))
        elif options["checkpoint"] == "sublayers":
            stack.enter_context(checkpointed_sublayers(model))
        if live:
            print(json.dumps(live_step(model, batch)))
            return
        figures = measured_step(model, batch, save)
    tokens = batch.idx.numel()
    figures["tokens_per_s"] = round(tokens / figures["wall_s"], 1)
    figures["tokens_per_cpu_s"] = round(tokens / figures["cpu_s"], 1)
    figures["rows"] = int(batch.idx.shape[0])
    figures["layout"] = layout
    figures["documents"] = int((batch.doc_ids[:, 1:] != batch.doc_ids[:, :-1]).sum()) + int(
        batch.idx.shape[0]
    )
    print(json.dumps(figures))


def measured_step(model, batch, save: Path | None) -> dict:
    """Set-up, then one timed forward, backward and AdamW step; its wall, CPU and peak."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    for p in model.parameters():  # allocate AdamW's state before measuring
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # A forward and backward on 64 tokens first, so one-time library set-up (kernel
    # dispatch tables, thread pools) is not counted as the step's memory.
    short = {"doc_ids": batch.doc_ids[:1, :64], "position_ids": batch.position_ids[:1, :64]}
    model(batch.idx[:1, :64], batch.targets[:1, :64], **short, return_logits=False).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kb()["VmRSS"]
    wall, cpu = time.perf_counter(), time.process_time()
    out = model(
        batch.idx,
        batch.targets,
        doc_ids=batch.doc_ids,
        position_ids=batch.position_ids,
        return_logits=False,  # as the trainer calls it: the chunked loss, no (B, T, V) logits
    )
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()} if save else None
    optimizer.step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _memory_kb()["VmHWM"] - before
    if save is not None:
        torch.save({"loss": out.loss.detach(), "grads": grads}, save)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_mb": round(peak / 1024, 1),
        "loss": out.loss.item(),
    }


def live_step(model, batch) -> dict:
    """The live tensor bytes at the peak of one step (allocations minus frees, in order,
    from `torch.profiler` with `profile_memory`), and the innermost ops running then.

    Allocator-independent (no glibc fragmentation, unlike `peak_mb`); the profiler
    records one-thread CPU allocations of the step only, AdamW's state made before.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step = {"doc_ids": batch.doc_ids, "position_ids": batch.position_ids}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(batch.idx, batch.targets, **step, return_logits=False).loss.backward()
        optimizer.step()
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = peak_ns = 0
    for when, nbytes in memory:
        live += nbytes
        if live > peak:
            peak, peak_ns = live, when
    running = sorted(
        (e.start_ns(), e.name())
        for e in events
        if e.name() != "[memory]" and e.start_ns() <= peak_ns <= e.start_ns() + e.duration_ns()
    )
    return {"live_peak_mb": round(peak / 2**20, 1), "at_peak": [name for _, name in running][-4:]}


def attention_worker(corpus_path: Path, context: int, mode: str, batch_tokens: int) -> None:
    """Peak memory of one layer's attention alone (forward and backward) on the batch."""
    import torch
    import torch.nn.functional as F

    from seqlm.kernels.lazy_mask import LazyAttentionMask, dense_attention_mask
    from seqlm.kernels.windowed_attention import masked_attention

    torch.set_num_threads(1)
    _, batch, _ = packed_batch(corpus_path, context, batch_tokens)
    rows, length = batch.idx.shape
    heads = LONG_SHAPE["heads"]
    shape = (rows, heads, length, LONG_SHAPE["dim"] // heads)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator).requires_grad_() for _ in range(3))
    docs = batch.doc_ids
    warm = masked_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64], None)
    warm.sum().backward()
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kb()["VmRSS"]
    if mode == "dense":  # what the model did before: a dense boolean mask into SDPA
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=dense_attention_mask(length, docs, None, "cpu")
        )
    else:
        out = masked_attention(q, k, v, LazyAttentionMask(length, docs, None))
    out.sum().backward()
    print(json.dumps({"attention_peak_mb": round((_memory_kb()["VmHWM"] - before) / 1024, 1)}))


def compare_saved(dense: Path, blockwise: Path) -> dict[str, float]:
    import torch

    a = torch.load(dense, weights_only=True)
    b = torch.load(blockwise, weights_only=True)
    grad_diff = max(float((a["grads"][n] - b["grads"][n]).abs().max()) for n in a["grads"])
    return {"loss_diff": float((a["loss"] - b["loss"]).abs()), "grad_max_diff": grad_diff}


def run_long(
    corpus: Path,
    contexts: list[int],
    repeats: int,
    batch_tokens: int,
    scratch: Path,
    options: dict,
):
    """Rows of the long benchmark: per context, medians over fresh subprocesses."""
    settings = [options["loss_impl"], options["checkpoint"]]
    settings += ["1" if options["lean_mlp"] else "0"]
    rows = []
    for context in contexts:
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        saved = {mode: scratch / f"grads_{context}_{mode}.pt" for mode in MODES}
        for repeat in range(repeats):
            for mode in MODES:
                command = [sys.executable, __file__, str(corpus), str(context), mode]
                command += [str(batch_tokens), str(saved[mode]) if repeat == 0 else "-"]
                command += settings
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[mode].append(result)
                print(f"  ctx {context} {mode} run {repeat + 1}: {result}", file=sys.stderr)
        attention = {}
        for mode in MODES:
            command = [sys.executable, __file__, str(corpus), str(context), f"{mode}-attention"]
            done = subprocess.run(
                command + [str(batch_tokens), "-", *settings], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            attention[mode] = json.loads(done.stdout.strip().splitlines()[-1])["attention_peak_mb"]
            print(f"  ctx {context} {mode} attention only: {attention[mode]} MB", file=sys.stderr)
        med = {
            mode: {
                key: statistics.median(r[key] for r in results)
                for key in ("tokens_per_s", "tokens_per_cpu_s", "peak_mb", "wall_s", "cpu_s")
            }
            for mode, results in runs.items()
        }
        rows.append(
            {
                "context": context,
                "rows": runs["dense"][0]["rows"],
                "layout": runs["dense"][0]["layout"],
                "documents": runs["dense"][0]["documents"],
                "repeats": repeats,
                "loss_impl": options["loss_impl"],
                "checkpoint": options["checkpoint"],
                "lean_mlp": options["lean_mlp"],
                "dense_peak_mb": med["dense"]["peak_mb"],
                "blockwise_peak_mb": med["blockwise"]["peak_mb"],
                "memory_ratio": round(med["dense"]["peak_mb"] / med["blockwise"]["peak_mb"], 2),
                "dense_tokens_per_s": med["dense"]["tokens_per_s"],
                "blockwise_tokens_per_s": med["blockwise"]["tokens_per_s"],
                "speedup": round(
                    med["blockwise"]["tokens_per_s"] / med["dense"]["tokens_per_s"], 2
                ),
                "dense_tokens_per_cpu_s": med["dense"]["tokens_per_cpu_s"],
                "blockwise_tokens_per_cpu_s": med["blockwise"]["tokens_per_cpu_s"],
                "cpu_speedup": round(
                    med["blockwise"]["tokens_per_cpu_s"] / med["dense"]["tokens_per_cpu_s"], 2
                ),
                "dense_cpu_s": med["dense"]["cpu_s"],
                "blockwise_cpu_s": med["blockwise"]["cpu_s"],
                "dense_attention_peak_mb": attention["dense"],
                "blockwise_attention_peak_mb": attention["blockwise"],
                "attention_memory_ratio": round(
                    attention["dense"] / max(attention["blockwise"], 0.1), 1
                ),
                **compare_saved(saved["dense"], saved["blockwise"]),
            }
        )
    return rows


def print_long_table(rows: list[dict]) -> None:
    print(
        f"{'ctx':>6} {'layout':>6} {'rows':>4} {'docs':>4} {'dense MB':>9} {'block MB':>9} {'ratio':>6} "
        f"{'dense tok/s':>11} {'block tok/s':>11} {'speedup':>7} {'cpu x':>6} "
        f"{'dense cpu s':>11} {'block cpu s':>11} {'loss diff':>9} {'grad diff':>9}"
    )
    for r in rows:
        print(
            f"{r['context']:>6} {r['layout']:>6} {r['rows']:>4} {r['documents']:>4} {r['dense_peak_mb']:>9.1f} "
            f"{r['blockwise_peak_mb']:>9.1f} {r['memory_ratio']:>6.2f} "
            f"{r['dense_tokens_per_s']:>11.0f} {r['blockwise_tokens_per_s']:>11.0f} "
            f"{r['speedup']:>7.2f} {r['cpu_speedup']:>6.2f} {r['dense_cpu_s']:>11.2f} "
            f"{r['blockwise_cpu_s']:>11.2f} {r['loss_diff']:>9.1e} {r['grad_max_diff']:>9.1e}"
        )


if __name__ == "__main__":
    corpus_arg, context_arg, mode_arg, tokens_arg, save_arg = sys.argv[1:6]
    loss_arg, checkpoint_arg, lean_arg = sys.argv[6:9]
    live_arg = mode_arg.endswith("-live")
    mode_arg = mode_arg.removesuffix("-live")
    if mode_arg.endswith("-attention"):
        attention_worker(
            Path(corpus_arg), int(context_arg), mode_arg[: -len("-attention")], int(tokens_arg)
        )
        sys.exit(0)
    long_worker(
        Path(corpus_arg),
        int(context_arg),
        mode_arg,
        int(tokens_arg),
        None if save_arg == "-" else Path(save_arg),
        {"loss_impl": loss_arg, "checkpoint": checkpoint_arg, "lean_mlp": lean_arg == "1"},
        live_arg,
    )
