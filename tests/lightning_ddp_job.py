"""A 2-process Lightning DDP job on CPU (gloo) for tests/test_torch_resume.py: ``python
lightning_ddp_job.py MODE OUT`` with MODE ``full`` (uninterrupted, run file OUT/full.nc), ``kill``
(both ranks die with ``os._exit`` at step 9, after the Lightning checkpoint of step 7 and the run
file's checkpoint at step 8) or ``resume`` (from that checkpoint, same run file OUT/job.nc)."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from bandscope.torch.lightning import BandscopeCallback
from torch_models import lightning_autoencoder, seeded_mlp_ae

torch.set_num_threads(1)
MODE, OUT = sys.argv[1], Path(sys.argv[2])
PANEL = np.random.default_rng(5).random((8, 3, 4, 4))


class Kill(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if MODE == "kill" and trainer.global_step == 9:
            os._exit(0)  # SIGKILL-like: nothing is flushed or closed, the kernel drops the lock


def main():
    # one batch per rank and epoch (Lightning restarts an interrupted epoch of a plain DataLoader)
    data = torch.utils.data.TensorDataset(torch.from_numpy(np.random.default_rng(0).random((16, 3, 4, 4))))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)
    path = OUT / ("full.nc" if MODE == "full" else "job.nc")
    cb = BandscopeCallback(panel=PANEL, path=path, schedule=range(0, 16, 4), progress_bar=False)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=OUT / f"ckpt-{MODE}", every_n_train_steps=7, save_top_k=-1)
    trainer = pl.Trainer(max_steps=15, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         callbacks=[cb, Kill(), ckpt], enable_model_summary=False, enable_progress_bar=False)
    resume = None
    if MODE == "resume":
        (resume,) = (OUT / "ckpt-kill").glob("*step=7.ckpt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(lightning_autoencoder(seeded_mlp_ae), loader, ckpt_path=resume)
    if trainer.global_rank == 0:
        (OUT / f"warnings-{MODE}.txt").write_text("\n".join(str(w.message) for w in seen))


if __name__ == "__main__":
    main()
