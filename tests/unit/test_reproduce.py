"""bench/reproduce_milco.py's smoke run: the same SCT config trains the same delta twice (what reproducing a shipped
version rests on), and the checks that compare a reproduction with the shipped version say what differs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import reproduce_milco  # noqa: E402

from milco_os.training.config import SctConfig  # noqa: E402
from milco_os.training.trainer import train_sct  # noqa: E402
from tests.unit.test_training_states import tiny_module, tiny_sct_data  # noqa: E402


def trained(output: Path) -> dict[str, torch.Tensor]:
    module = tiny_module()
    q_states, d_states, groups = tiny_sct_data(module)
    config = SctConfig(languages=["de"], output=output, lr=5e-2, batch_size=2, epochs=3, group_size=3,
                       warmup_ratio=0.0, distill_weight=1.0, checkpoint_every=2, train_top_layers=1)
    train_sct(module, q_states, d_states, groups, np.tile([0.9, 0.5, 0.4], (4, 1)), config)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_same_config_trains_the_same_delta(tmp_path: Path) -> None:
    first, second = trained(tmp_path / "a"), trained(tmp_path / "b")
    assert first.keys() == second.keys()
    changed = [k for k in first if not torch.equal(first[k], tiny_module().state_dict()[k])]
    assert changed  # training moved something, and both runs moved it alike
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=0)


def test_differences_name_each_figure_off_by_more_than_the_tolerance() -> None:
    shipped = {"gate overlap_en": 0.633, "titles-clir-test ndcg@10 a=0.5": 0.461, "gate always_on": 0.247}
    reproduced = {"gate overlap_en": 0.641, "titles-clir-test ndcg@10 a=0.5": 0.448}
    found = reproduce_milco.differences(shipped, reproduced, 0.01)
    assert len(found) == 2
    assert found[0].startswith("titles-clir-test ndcg@10 a=0.5: shipped 0.4610, reproduced 0.4480")
    assert found[1] == "gate always_on: shipped 0.247, not reproduced"
    assert reproduce_milco.differences(shipped, shipped, 0.0) == []


def test_a_config_must_be_the_one_the_version_recorded() -> None:
    recorded = {"seed": 42, "max_queries": 6400, "output": "results/train/x"}
    assert reproduce_milco.config_differences({**recorded, "output": "elsewhere"}, recorded) == []
    assert reproduce_milco.config_differences({**recorded, "max_queries": 3200}, recorded) == [
        "max_queries: config 3200, shipped 6400"]


def test_gates_are_the_numbers_of_the_sct_record() -> None:
    manifest = {"gates": {"sap": {"overlap_en": 0.68}, "sct": {"overlap_en": 0.63, "always_on_term": "libre",
                                                              "passed": True, "doc_terms": 155}}}
    assert reproduce_milco.numeric_gates(manifest) == {"gate overlap_en": 0.63, "gate doc_terms": 155.0}


def test_cached_inputs_are_linked_once(tmp_path: Path) -> None:
    source = tmp_path / "run"
    source.mkdir()
    for name in ("states-ab.pt", "ground-cd.pt", "checkpoint.pt"):
        (source / name).write_bytes(b"x")
    target = tmp_path / "again"
    assert reproduce_milco.link_cached_inputs(source, target) == ["states-ab.pt", "ground-cd.pt"]
    assert sorted(p.name for p in target.iterdir()) == ["ground-cd.pt", "states-ab.pt"]
    assert reproduce_milco.link_cached_inputs(source, target) == []
