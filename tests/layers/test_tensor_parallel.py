"""HD-FGD/SA blocks under tensor parallelism: the unit-major layout keeps each hidden unit's k
rows adjacent, so torch's ColwiseParallel producer / RowwiseParallel consumer shard whole units
and each rank evaluates F on its own units. Two CPU processes (gloo) against one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

import netadv

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def _block(sa: bool) -> nn.Module:
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
    return netadv.hdfgd(fc1, "gelu", consumer=fc2, adversarial=sa, init="fresh")


def _worker(rank: int, port: int, sa: bool, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        block = _block(sa)
        mesh = init_device_mesh("cpu", (2,))
        plan = {"producer": ColwiseParallel(), "consumer": RowwiseParallel()}
        parallelize_module(block, mesh, plan)
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = block(x)
        y.square().mean().backward()
        result = {
            "y": y.detach(),
            "x_grad": x.grad,
            "producer_grad": block.producer.weight.grad.full_tensor(),
            "consumer_grad": block.consumer.weight.grad.full_tensor(),
            "local_width": block.producer.weight.to_local().shape[0],
        }
        if sa:  # each rank's penalty is the mean over its own units
            p = block.last_penalty.detach().clone()
            dist.all_reduce(p)
            result["penalty"] = p / 2
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sa", [False, True])
def test_sharded_block_matches_one_process(tmp_path, sa):
    torch.multiprocessing.spawn(_worker, args=(_free_port(), sa, str(tmp_path)), nprocs=2)
    ref = _block(sa)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = ref(x)
    y.square().mean().backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)  # written above
        assert got["local_width"] == 2 * 16 // 2  # half the units, all k=2 rows of each
        assert torch.allclose(got["y"], y.detach(), atol=1e-6)
        assert torch.allclose(got["x_grad"], x.grad, atol=1e-6)
        assert torch.allclose(got["producer_grad"], ref.producer.weight.grad, atol=1e-6)
        assert torch.allclose(got["consumer_grad"], ref.consumer.weight.grad, atol=1e-6)
        if sa:  # equal shards: the mean of the ranks' penalties is the whole block's
            assert torch.allclose(got["penalty"], ref.last_penalty.detach(), atol=1e-7)
