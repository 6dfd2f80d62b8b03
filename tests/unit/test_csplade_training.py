"""CSPLADE training driver: packing, FLOPS, negatives, committed configs, and that both stages train and
resume on the same batches (on a tiny random Llama in place of SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from milco_os.training import csplade as training
from milco_os.training.config import CspladeAdaptConfig, CspladeConfig, load_config
from tests.unit.test_csplade import WORDS, llama_tokenizer, tiny_lm

ROOT = Path(__file__).resolve().parents[2]


def test_packed_sequences_join_texts_with_eos_and_drop_the_rest() -> None:
    tok = llama_tokenizer()
    rows = training.packed_sequences(tok, ["the a heart", "attack blood", "tea green water hot cold"], 4)
    eos = tok.eos_token_id
    flat = [t for r in rows.tolist() for t in r]
    assert rows.shape == (3, 4)  # (3 + 1) + (2 + 1) + (5 + 1) = 13 tokens: the 13th is dropped
    assert flat[3] == eos and flat[6] == eos
    assert tok.bos_token_id not in flat  # special tokens are not added per text


def test_flops_is_the_sum_of_squared_batch_means() -> None:
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert training.flops(x).item() == pytest.approx(2.0**2 + 0.0 + 1.0**2)


def test_random_negatives_put_the_positive_first_and_never_repeat_it() -> None:
    groups = training.hard_negatives(Path("unused"), ["q"] * 20, ["p"] * 20, 4, "random", seed=3)
    assert groups.shape == (20, 4)
    assert (groups[:, 0] == np.arange(20)).all()
    for i, row in enumerate(groups):
        assert len(set(row.tolist())) == 4 and i not in row[1:]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "train").glob("csplade-*.toml")))
def test_committed_configs_parse(name: str) -> None:
    kind = CspladeAdaptConfig if name == "csplade-adapt" else CspladeConfig
    config = load_config(ROOT / "configs" / "train" / f"{name}.toml", kind)
    assert config.output == Path(f"results/train/{name}")
    if name != "csplade-adapt":
        assert config.variant == name.split("-")[1]
        assert (config.init is None) == name.endswith("-raw")


def test_term_loss_counts_the_targets_and_the_kept_terms_and_revives_dropped_targets() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, -1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.2, 0.0, 0.5]])
    # keep 2: entries 0 and 1 are the student's; entry 3 is the target's (its ReLU is dead); 2 is neither
    w0 = torch.log1p(torch.tensor(3.0))
    t1 = torch.log1p(torch.tensor(2.0)) - 1.2
    t3 = training.LEAK * -1.0 - 0.5
    loss = training.term_loss(logits, target, 2)
    assert loss.item() == pytest.approx(float(w0**2 + t1**2 + t3**2) / 3)
    loss.backward()
    assert logits.grad[0, 2] == 0 and logits.grad[0, 0] > 0  # not selected; pushed down
    assert logits.grad[0, 3] < 0  # a dropped target term is pulled back up


def test_token_shares_count_each_text_once() -> None:
    tok = llama_tokenizer()
    shares = training.token_shares(tok, ["heart heart attack", "heart tea"], len(tok))
    vocab = tok.get_vocab()
    assert shares[vocab["heart"]] == 1.0 and shares[vocab["attack"]] == 0.5 and shares[vocab["sun"]] == 0.0


class Stop(Exception):
    pass


@pytest.fixture
def tiny_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2 and the help pages replaced by a tiny Llama and a few word lists."""
    tok = llama_tokenizer()
    tok.pad_token = tok.eos_token
    monkeypatch.setattr(training.csplade_mini, "load_base", lambda _cache: (tiny_lm(seed=7).train(), tok))
    rng = np.random.default_rng(0)
    pages = [(f"p{i}", " ".join(rng.choice(WORDS, 2)), " ".join(rng.choice(WORDS, 12))) for i in range(24)]
    monkeypatch.setattr(training, "english_pages", lambda _cache, _split: pages)


def _adapter(output: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(output / name / "adapter_model.safetensors"))


def test_adaptation_then_contrastive_writes_a_delta_and_resumes_exactly(tmp_path: Path, tiny_base: None) -> None:
    adapt = CspladeAdaptConfig(output=tmp_path / "adapt", steps=4, batch_size=2, sequence_length=8, lr=1e-2,
                               log_every=2, checkpoint_every=1, probe_texts=3)
    training.run_adapt(adapt, tmp_path / "cache")
    assert (tmp_path / "adapt" / "adapt" / "adapter_config.json").is_file()
    log = (tmp_path / "adapt" / "train.log.jsonl").read_text()
    assert '"probe_terms"' in log and '"positive_share"' in log

    def contrastive(output: Path, stop_at: int | None = None) -> Path:
        config = CspladeConfig(output=output, init=tmp_path / "adapt", variant="bi", steps=4, batch_size=2,
                               group_size=2, negatives="random", lr=1e-2, checkpoint_every=1,
                               query_max_length=8, passage_max_length=16, query_top_k=4, document_top_k=8,
                               ground_weight=1.0, lambda_df=0.1, lambda_df_q=0.1, eval_every=2)
        done = [0]

        def progress(_n: int = 1) -> None:
            done[0] += 1
            if done[0] == stop_at:
                raise Stop

        return training.run_contrastive(config, tmp_path / "cache", progress)

    whole = contrastive(tmp_path / "whole")
    with pytest.raises(Stop):
        contrastive(tmp_path / "killed", stop_at=3)  # killed after the checkpoint of step 3
    resumed = contrastive(tmp_path / "killed")
    for key, value in _adapter(whole, "contrastive").items():
        torch.testing.assert_close(_adapter(resumed, "contrastive")[key], value)
    manifest = (whole / "manifest.json").read_text()
    assert '"variant": "bi"' in manifest and '"csplade-adapt"' in manifest
    records = [json.loads(line) for line in (whole / "train.log.jsonl").read_text().splitlines()]
    trained_steps = [r for r in records if "loss" in r]
    assert all(r["ground"] > 0 and r["df"] > 0 and r["df_q"] > 0 for r in trained_steps)  # the extra losses took part
    dev = [r for r in records if "dev" in r]
    assert [r["step"] for r in dev] == [2, 4]  # every eval_every steps and at the end
    assert all(0 <= r["dev"]["ndcg10"] <= 1 and 0 <= r["dev"]["function_free"] <= 1 and r["dev"]["q_terms"] <= 4
               for r in dev)
    assert json.loads(manifest)["dev"] == dev[-1]["dev"]
    assert (whole / "adapt" / "adapter_model.safetensors").is_file()  # the delta carries both adapters
    trained = _adapter(whole, "contrastive")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in trained.items())


def test_known_item_measure_names_the_function_words_it_counts(tiny_base: None) -> None:
    from milco_os.models.csplade import CSpladeModule

    lm, tok = training.csplade_mini.load_base(None)
    module = CSpladeModule(lm, variant="echo").eval()
    pages = training.english_pages(None, "dev")
    config = CspladeConfig(output=Path("unused"), variant="echo", query_max_length=8, document_max_length=16,
                           query_top_k=4, document_top_k=8)
    size = int(module._head().weight.shape[0])
    queries = training.encode_pooled(module, tok, [title for _, title, _ in pages], 8, 4, "cpu")
    positive_top5 = int((queries.topk(5, dim=1).values > 0).sum())
    assert positive_top5 > 0
    # every entry a function word: each positive top-5 weight is counted once, under its readable term
    everything = training.known_item_measure(module, tok, pages, config, torch.ones(size, dtype=torch.bool), 10_000)
    assert sum(everything["function_terms"].values()) == positive_top5
    assert everything["function_free"] == round(float((queries.topk(5, dim=1).values <= 0).all(1).float().mean()), 4)
    # none: every query is function-free and nothing is named; without name_terms the key is absent
    nothing = training.known_item_measure(module, tok, pages, config, torch.zeros(size, dtype=torch.bool), 10)
    assert nothing["function_free"] == 1.0 and nothing["function_terms"] == {}
    assert "function_terms" not in training.known_item_measure(module, tok, pages, config,
                                                               torch.zeros(size, dtype=torch.bool))
    assert everything["ndcg10"] == nothing["ndcg10"]  # naming words changes no score


def test_query_targets_take_their_own_common_share(tmp_path: Path, tiny_base: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shares: list[float] = []
    real = training.term_targets

    def spy(*args: object) -> object:
        shares.append(args[-1])  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "term_targets", spy)
    config = dict(variant="echo", steps=1, batch_size=2, group_size=2, negatives="random", query_max_length=8,
                  passage_max_length=16, query_top_k=4, document_top_k=8, ground_weight=1.0, common_share=0.3)
    training.run_contrastive(CspladeConfig(output=tmp_path / "own", query_common_share=0.05, **config), tmp_path)
    training.run_contrastive(CspladeConfig(output=tmp_path / "shared", **config), tmp_path)
    assert shares == [0.05, 0.3, 0.3, 0.3]  # queries, then passages; unset: the passages' share
    own = sorted((tmp_path / "own").glob("terms-*.pt"))
    shared = sorted((tmp_path / "shared").glob("terms-*.pt"))
    assert len(own) == len(shared) == 2 and {p.name for p in own} != {p.name for p in shared}  # cached apart
