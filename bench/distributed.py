"""Pruning an FSDP2-sharded Llama on 2 CPU processes, and the per-rank memory of a 70B model on 8 and 64 ranks.

Part 1 spawns 2 gloo processes (file rendezvous).  Each builds a Llama-shaped
model (default about 1B parameters: dim 2048, 16 layers, 16 heads, MLP 5632,
vocab 32000) on the meta device, shards it with FSDP2, allocates and fills
only its own shards, then runs ``fxprune.distributed.prune_sharded`` (``l1``,
ratio 0.5, ``release_source=True``) under a ``MemoryMeter``.  Printed per
rank: seconds, the parameter bytes it held before (its shards), the meter's
peak (every tensor storage: shards, temporaries, score sums), the bound
``model / 2 + largest parameter``, and peak RSS.

Part 2 accounts the parameter bytes per rank of a Llama-2-70B-shaped model
(bf16) on 8 and 64 ranks twice: by the formula
``fxprune.distributed.rank_bytes`` (``ceil(rows / world)`` rows per
parameter) and by sharding the meta model with ``fully_shard`` on a fake
process group of that size (``DTensor`` local shapes; nothing allocated).

Run:  python bench/distributed.py [--dim 2048 --layers 16 --mlp 5632 --heads 16 --vocab 32000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import torch

from fxprune.testing import zoo


def _config(args: argparse.Namespace) -> dict:
    return dict(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                n_kv_heads=args.heads, intermediate_size=args.mlp, max_seq_len=64)


def _shard(model: torch.nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _worker(rank: int, store: str, out: str, cfg: dict) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from fxprune.distributed import MemoryMeter, prune_sharded

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = zoo.Llama(**cfg).eval()
        twin = zoo.Llama(**cfg).eval()
    sizes = [p.numel() * p.element_size() for p in twin.parameters()]
    _shard(model, mesh)
    model.to_empty(device="cpu")
    rope = zoo.LlamaAttention(cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["max_seq_len"])
    g = torch.Generator().manual_seed(rank)
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local()
            local.normal_(1.0 if name.endswith("layernorm.weight") or name == "norm.weight" else 0.0, 0.02,
                          generator=g)
        for layer in model.layers:
            layer.self_attn.cos.copy_(rope.cos)
            layer.self_attn.sin.copy_(rope.sin)
    del rope
    build = time.perf_counter() - t0
    held = sum(p.to_local().untyped_storage().nbytes() for p in model.parameters())
    tokens = torch.zeros(1, 16, dtype=torch.long)
    t0 = time.perf_counter()
    with MemoryMeter(model.parameters()) as meter:
        result = prune_sharded(model, twin, (tokens,), 0.5, release_source=True)
    seconds = time.perf_counter() - t0
    pruned = sum(p.to_local().numel() * p.element_size() for p in result.graph_module.parameters())
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"build": build, "seconds": seconds, "held": held, "peak": meter.peak, "model": sum(sizes),
                   "largest": max(sizes), "pruned_local": pruned, "params": sum(sizes) // 4,
                   "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}, fh)
    dist.barrier()
    dist.destroy_process_group()


def _accounting(world: int) -> tuple[int, int, int]:
    """(formula bytes, fully_shard meta bytes, largest parameter bytes) of a bf16 70B Llama on ``world`` ranks."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from fxprune.distributed import rank_bytes

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        with torch.device("meta"):
            model = zoo.Llama(vocab_size=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                              intermediate_size=28672, max_seq_len=64).to(torch.bfloat16)
        shapes = [tuple(p.shape) for p in model.parameters()]
        largest = max(p.numel() for p in model.parameters()) * 2
        _shard(model, init_device_mesh("cpu", (world,)))
        meta = sum(p.to_local().numel() * p.element_size() for p in model.parameters())   # rank 0: the fullest
        return rank_bytes(shapes, world, 2), meta, largest
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--mlp", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    import torch.multiprocessing as mp

    out = tempfile.mkdtemp()
    mp.spawn(_worker, args=(os.path.join(out, "rendezvous"), out, _config(args)), nprocs=2, join=True)
    gib = 1 << 30
    for rank in (0, 1):
        with open(f"{out}/rank{rank}.json") as fh:
            r = json.load(fh)
        if rank == 0:
            print(f"Llama {r['params'] / 1e9:.2f}B parameters (fp32, {r['model'] / gib:.2f} GiB), 2 ranks, l1, ratio 0.5")
        bound = r["model"] / 2 + r["largest"]
        print(f"rank {rank}: build {r['build']:.1f} s, prune {r['seconds']:.1f} s; shards held {r['held'] / gib:.3f} GiB, "
              f"meter peak {r['peak'] / gib:.3f} GiB (bound model/2 + largest = {bound / gib:.3f} GiB), "
              f"pruned shards {r['pruned_local'] / gib:.3f} GiB, peak RSS {r['rss'] / gib:.2f} GiB")
    print("\nLlama-2-70B shape, bf16: parameter bytes per rank (fullest rank)")
    for world in (8, 64):
        formula, meta, largest = _accounting(world)
        print(f"{world:>3} ranks: formula {formula / gib:.3f} GiB, fully_shard on meta {meta / gib:.3f} GiB "
              f"({'equal' if formula == meta else 'DIFFERENT'}); prune bound + largest parameter "
              f"{(formula + largest) / gib:.3f} GiB")


if __name__ == "__main__":
    main()
