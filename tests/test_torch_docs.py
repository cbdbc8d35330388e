"""The integration snippets of docs/torch.md run as written (plain loop, the pieces, Lightning,
HuggingFace), each producing a run file that ``bandscope analyze`` reads."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandscope.cli import main  # noqa: E402
from bandscope.io import read_run  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


DOC = Path(__file__).resolve().parents[1] / "docs" / "torch.md"


def snippets() -> dict[str, str]:
    """Code blocks preceded by ``<!-- run: NAME -->`` in docs/torch.md."""
    text = DOC.read_text()
    found = re.findall(r"<!-- run: (\w+) -->\s*```python\n(.*?)```", text, flags=re.S)
    return {name: code for name, code in found}


def test_docs_have_the_three_stacks():
    names = set(snippets())
    assert {"plain", "lightning", "hf", "pieces"} <= names
    for name in ("plain", "lightning", "hf"):  # two bandscope lines: the import and the object
        code = snippets()[name]
        assert "BandscopeCallback(panel=PANEL, path=RUN_FILE)" in code or "Monitor(model, panel=PANEL" in code


class TinyAE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


def _images(n, seed):
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


@pytest.fixture
def ns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # trainers write their logs under the working directory
    torch.manual_seed(0)
    model = TinyAE()
    train = torch.from_numpy(_images(320, 0))
    return {"torch": torch, "np": np, "model": model,
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
            "loader": torch.utils.data.DataLoader(train, batch_size=8, shuffle=True,
                                                  generator=torch.Generator().manual_seed(0)),
            "PANEL": (_images(32, 1) * 255).astype(np.uint8), "RUN_FILE": str(tmp_path / "run.nc")}


def _check_run(ns, min_checkpoints=10):
    ds = read_run(ns["RUN_FILE"])
    assert ds.sizes["checkpoint"] >= min_checkpoints and int(ds.step[0]) == 0
    assert (np.diff(ds.param_time.values) > 0).all()
    assert main(["analyze", ns["RUN_FILE"]]) == 0
    return ds


@pytest.mark.parametrize("name", ["plain", "pieces"])
def test_plain_loop_snippets_run(ns, name):
    exec(compile(snippets()[name], f"docs/torch.md:{name}", "exec"), ns)
    ds = _check_run(ns)
    if name == "plain":
        assert int(ds.step[-1]) == 40  # close() recorded the last step


def test_lightning_snippet_runs(ns):
    lightning = pytest.importorskip("lightning")
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        def training_step(self, x, batch_idx):
            return torch.nn.functional.mse_loss(self(x), x)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    ns.update(lightning=lightning, lit_model=Lit(ns["model"]))
    exec(compile(snippets()["lightning"], "docs/torch.md:lightning", "exec"), ns)
    assert int(_check_run(ns).step[-1]) == 40


def test_hf_snippet_runs(ns, tmp_path):
    transformers = pytest.importorskip("transformers")

    class HFAE(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixel_values, labels=None):
            recon = self.net(pixel_values)
            out = {"reconstruction": recon}
            return out if labels is None else {"loss": torch.nn.functional.mse_loss(recon, labels), **out}

    class DS(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.x[i]}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=30, per_device_train_batch_size=8,
                                          learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no",
                                          disable_tqdm=True)
    ns.update(Trainer=transformers.Trainer, hf_model=HFAE(ns["model"]), args=args,
              train_dataset=DS(torch.from_numpy(_images(320, 0))))
    exec(compile(snippets()["hf"], "docs/torch.md:hf", "exec"), ns)
    assert int(_check_run(ns).step[-1]) == 30
