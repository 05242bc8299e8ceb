"""One rank of the DDP test: trains the same model with DDP, once compiled by byteir and once in eager.

Usage: python ddp_worker.py RANK WORLD PORT OUT.json
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def train(model, compiled: bool, rank: int, steps: int = 3):
    # The compiled module inside DDP: Dynamo graph-breaks inside DDP.forward itself in this torch (its Logger),
    # so compiling the DDP wrapper would leave the model in eager.
    ddp = DDP(torch.compile(model, backend="byteir") if compiled else model)
    run = ddp
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
        loss = torch.nn.functional.mse_loss(run(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in model.parameters()]


def main():
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    twin.load_state_dict(base.state_dict())
    compiled_losses, compiled_params = train(base, True, rank)
    eager_losses, eager_params = train(twin, False, rank)
    max_param_diff = max((a - b).abs().max().item() for a, b in zip(compiled_params, eager_params))
    from byteir_frontend_torch import dynamo

    with open(out, "w") as f:
        json.dump({"compiled": compiled_losses, "eager": eager_losses, "max_param_diff": max_param_diff,
                   "param_checksum": sum(float(p.double().sum()) for p in compiled_params),
                   "byteir_graphs": [e["kind"] for e in dynamo.compile_log]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
