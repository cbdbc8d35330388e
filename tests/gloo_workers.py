"""Run a test body on several CPU processes joined by a gloo process group (torch.distributed).

``run_gloo(body, world, *args)`` spawns ``world`` processes; each initialises the group, calls
``body(rank, world, *args)`` (a module-level function of the test module, so the spawned process
can import it), waits for the others at a barrier and leaves. Results go through files the body
writes; a failure in any process fails the spawn (``torch.multiprocessing.spawn`` raises).
"""
from __future__ import annotations

import os
import socket
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous of one spawn)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, body, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ok = False
    try:
        body(rank, world, *args)
        # every rank done before any tears down: rank 0 hosts the TCP store, and a rank that exits
        # while another is still in destroy_process_group can abort it
        dist.barrier()
        ok = True
    finally:
        dist.destroy_process_group()
    # Leave without interpreter teardown: torch's gloo/device-mesh threads can abort it at exit
    # ("terminate called without an active exception", SIGABRT) after every result is written
    # and the group destroyed. Failures above still raise normally.
    if ok:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_gloo(body, world: int, *args) -> None:
    """Run ``body(rank, world, *args)`` on ``world`` gloo processes; raises if any of them fails."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(world, free_port(), body, args), nprocs=world, join=True)
