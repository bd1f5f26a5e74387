"""strategy=fsdp: FSDP2 over 2 CPU processes (gloo) against DDP, its resume, and its
checkpoint in a plain model; the sharding policy and the checkpoint's optimizer layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.classify import CLASSIFY
from netadv.experiments.distributed import Placement
from netadv.experiments.loop import build
from netadv.experiments.models import build_model
from netadv.experiments.parallel import _by_index, _by_name, repeated_blocks
from netadv.experiments.run_folder import CHECKPOINT
from netadv.experiments.trainer import make_optimizer
from netadv.experiments.translate.model import build_translation_model

# a rewritten (SA) ViT, tiny: 2 steps per epoch on each of 2 ranks
VIT = [
    "dataset=synthetic",
    "model=vit",
    "model_kwargs={embed_dim: 32, depth: 2, num_heads: 2}",
    "method=sa",
    "batch_size=64",
    "limit_train=128",
    "limit_test=64",
    "schedule=constant",
    "augment=true",
    "grad_clip=1.0",
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / CHECKPOINT, weights_only=True)


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's model and optimizer state, by a flat name."""
    out = {f"model.{k}": v for k, v in state["model"].items()}
    for i, moments in state["optimizer"]["state"].items():
        out.update({f"optimizer.{i}.{k}": v for k, v in moments.items()})
    return out


def test_fsdp_refuses_diagnostics_in_one_line(tiny):
    with pytest.raises(ConfigError, match="use strategy=ddp for a diagnostics run") as e:
        tiny("strategy=fsdp", "diagnostics=true")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="strategy must be one of ddp, fsdp"):
        tiny("strategy=zero3")


def _names(model: nn.Module) -> list[str]:
    name = {id(m): n for n, m in model.named_modules()}
    return [name[id(m)] for m in repeated_blocks(model)]


def test_the_repeated_blocks_are_the_units():
    vit = build_model(
        "vit", in_chans=1, num_classes=3, image_size=8, embed_dim=8, depth=3, num_heads=2
    )
    assert _names(vit) == ["blocks.0", "blocks.1", "blocks.2"]
    swin = build_model(
        "swin",
        in_chans=1,
        num_classes=3,
        image_size=16,
        embed_dim=8,
        depths=(2, 2),
        num_heads=(1, 2),
    )
    assert _names(swin) == [  # each stage's blocks, before the stages that hold them
        "layers.1.blocks.0",
        "layers.1.blocks.1",
        "layers.0.blocks.0",
        "layers.0.blocks.1",
        "layers.0",
        "layers.1",
    ]
    seq2seq = build_translation_model(
        "transformer", 50, 16, d_model=8, heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=16
    )
    assert _names(seq2seq) == ["decoder.0", "decoder.1", "encoder.0", "encoder.1"]
    mlp = build_model("mlp", in_chans=1, num_classes=3, image_size=4, depth=2, width=8)
    assert _names(mlp) == ["1", "3", "5"]  # the Linear layers; Flatten and Tanh hold nothing


def test_optimizer_state_by_name_and_back():
    """The checkpoint keeps optimizer.state_dict()'s layout (by index); FSDP's loader takes
    it by parameter name."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    cfg = config_mod.RunConfig()
    optimizer = make_optimizer(model, cfg)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    named = _by_name(model, optimizer, state)
    assert named["param_groups"][0]["params"] == ["0.weight", "2.weight"]
    assert set(named["state"]) == {"0.weight", "2.weight", "0.bias", "2.bias"}
    assert _by_index(named) == state


def _plain_model(cfg: config_mod.RunConfig):
    """The config's model in this process, as a single-process run builds it."""
    place = Placement(0, 1, torch.device("cpu"))
    data = CLASSIFY.load_data(cfg, None, place)
    model, _, _ = build(cfg, CLASSIFY, data)
    return model, data, place


@pytest.mark.slow
def test_fsdp_vit_matches_ddp_resumes_and_its_checkpoint_loads_plain(
    tmp_path, torchrun, tiny, reproducible_rows
):
    """A rewritten ViT sharded over 2 ranks: the same run as DDP up to float rounding (the
    clipping norm is summed over shards, in another order), resumed bit for bit, and its
    checkpoint (full, by rank 0) loads into a plain model that scores what the run scored."""
    ddp = torchrun(["name=ddp", "epochs=2"], base=VIT)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    full = torchrun(["name=full", "epochs=2", "strategy=fsdp"], base=VIT)
    assert full.returncode == 0, full.stderr[-2000:]

    rows, want = (
        reproducible_rows(tmp_path / "full" / "metrics.jsonl"),
        reproducible_rows(tmp_path / "ddp" / "metrics.jsonl"),
    )
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["train_examples"] == 128
    for row, other in zip(rows, want):
        assert row.keys() == other.keys()
        assert row == pytest.approx(other, rel=1e-5, abs=1e-6)
    sharded, replicated = (
        _tensors(_checkpoint(tmp_path / "full")),
        _tensors(_checkpoint(tmp_path / "ddp")),
    )
    assert sharded.keys() == replicated.keys()  # the same layout, the same names
    for key, value in sharded.items():
        assert value.shape == replicated[key].shape, key
        torch.testing.assert_close(value, replicated[key], rtol=1e-4, atol=1e-5)

    # stopped after epoch 1, resumed (with TensorBoard, which only rank 0 writes)
    tracked = importlib.util.find_spec("tensorboard") is not None
    cut = [f"tensorboard={str(tracked).lower()}", "name=cut", "strategy=fsdp"]
    stopped = torchrun([*cut, "epochs=1"], base=VIT)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    resumed = torchrun([*cut, "epochs=2"], "--resume", base=VIT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert reproducible_rows(tmp_path / "cut" / "metrics.jsonl") == rows
    after = _tensors(_checkpoint(tmp_path / "cut"))
    assert all(torch.equal(after[k], v) for k, v in sharded.items())
    if tracked:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "cut" / "tensorboard"), {"scalars": 0})
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]
        assert [e.value for e in events.Scalars("epoch/test_top1")] == [
            r["test_top1"] for r in rows
        ]

    # the checkpoint in a plain, single-process model: strict load, the run's score
    cfg = tiny(*VIT, "name=plain")
    model, data, place = _plain_model(cfg)
    state = _checkpoint(tmp_path / "full")
    model.load_state_dict(state["model"])
    make_optimizer(model, cfg).load_state_dict(state["optimizer"])
    scores, _ = CLASSIFY.evaluate(model, data, cfg, place)
    assert scores["test_top1"] == rows[-1]["test_top1"]
    assert scores["test_loss"] == pytest.approx(rows[-1]["test_loss"], rel=1e-5)


def _corpus(folder: Path) -> Path:
    """360 English-French pairs with a learnable pattern, as one TSV file."""
    verbs = {"open": "ouvrir", "close": "fermer", "delete": "supprimer", "copy": "copier"}
    adjs = {"red": "rouge", "old": "ancien", "new": "nouveau", "big": "grand", "small": "petit"}
    nouns = {"file": "fichier", "folder": "dossier", "window": "fenetre", "key": "cle"}
    nouns |= {"user": "utilisateur", "server": "serveur"}
    dets = {"the": "le", "a": "un", "my": "mon"}
    lines = [
        f"{v} {d} {a} {n}\t{fv} {fd} {fn} {fa}\n"
        for v, fv in verbs.items()
        for d, fd in dets.items()
        for a, fa in adjs.items()
        for n, fn in nouns.items()
    ]
    folder.mkdir()
    (folder / "all.tsv").write_text("".join(lines))
    return folder


@pytest.mark.slow
def test_fsdp_translation_decodes_as_ddp(tmp_path, torchrun, reproducible_rows):
    """Decoding calls the decoder layers' own ``step`` (not the forward FSDP hooks): the
    evaluation gathers every unit first, and the translations equal DDP's."""
    base = [
        "task=translate",
        "dataset=parallel",
        f"data_dir={_corpus(tmp_path / 'corpus')}",
        "model=transformer",
        "model_kwargs={d_model: 32, heads: 2, encoder_layers: 2, decoder_layers: 2, "
        "ffn_dim: 64, dropout: 0.0}",
        "vocab_size=320",
        "max_len=16",
        "epochs=1",
        "batch_size=32",
        "lr=0.003",
    ]
    for name in ("ddp", "fsdp"):
        proc = torchrun([f"name={name}", f"strategy={name}"], base=base)
        assert proc.returncode == 0, proc.stderr[-2000:]
    fsdp, ddp = (
        reproducible_rows(tmp_path / "fsdp" / "metrics.jsonl"),
        reproducible_rows(tmp_path / "ddp" / "metrics.jsonl"),
    )
    assert fsdp == ddp and {"test_bleu", "valid_loss"} <= fsdp[0].keys()
    hyps = (tmp_path / "fsdp" / "test_hypotheses.txt").read_text()
    assert hyps == (tmp_path / "ddp" / "test_hypotheses.txt").read_text()
