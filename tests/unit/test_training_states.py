"""The training shortcuts are exact: sparse max-pool gradients equal the dense computation's, cached
states batch back to what the backbone computes, SAP and SCT steps lower their losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from milco_os.errors import ConfigError
from milco_os.models.milco import MilcoModule, head_decoder
from milco_os.models.pooling import masked_max
from milco_os.training.config import SapConfig, SctConfig, load_config
from milco_os.training.states import (
    CachedStates,
    align_pieces,
    damp_common,
    dense_targets,
    encode_states,
    sparse_mse,
    sparse_pivot,
    teacher_token_targets,
    token_loss,
    top_k_targets,
    top_layers,
)
from milco_os.training.trainer import (
    batch_scores,
    common_terms,
    own_groups,
    ranking_loss,
    sct_ranking_loss,
    sparsity,
    train_sap,
    train_sct,
)
from tests.unit.tiny_models import multilingual_tokenizer


def tiny_module(seed: int = 0) -> MilcoModule:
    torch.manual_seed(seed)
    backbone = BertModel(BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32), add_pooling_layer=False)
    head = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32)).cls
    with torch.no_grad():
        head.predictions.decoder.bias.normal_(0, 1)  # plenty of positive and negative logits
    return MilcoModule(backbone, head, encoder_hidden=24, head_hidden=16, echo_impl="code")


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(3, 7, 24, generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return states, mask


def dense_raw(module: MilcoModule, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = module.mlm_head(module.activation(module.projector(states)))
    logits = logits.masked_fill(mask[:, :, None] == 0, float("-inf"))
    return logits.max(dim=1).values


def grads(module: MilcoModule) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None and "m_model" not in n}
    module.zero_grad(set_to_none=True)
    return out


def test_sparse_pivot_and_its_gradient_equal_the_dense_computation() -> None:
    module = tiny_module()
    states, mask = batch()
    pivot = sparse_pivot(module, states, mask)
    (pivot * torch.linspace(0.5, 2, pivot.shape[1])).sum().backward()
    sparse = grads(module)
    dense_pivot = torch.log1p(torch.relu(dense_raw(module, states, mask)))
    (dense_pivot * torch.linspace(0.5, 2, pivot.shape[1])).sum().backward()
    dense = grads(module)
    assert torch.allclose(pivot, dense_pivot, atol=1e-6)
    assert (pivot > 0).any() and (pivot == 0).any()
    assert sparse.keys() == dense.keys() and sparse
    for name in dense:
        assert torch.allclose(sparse[name], dense[name], atol=1e-5), name


def test_sparse_mse_equals_the_spec_formula_and_its_gradient() -> None:
    module = tiny_module()
    states, mask = batch()
    target = torch.randn(3, 50)
    loss, _ = sparse_mse(module, states, mask, target)
    loss.backward()
    sparse = grads(module)
    raw = dense_raw(module, states, mask)
    keep = (raw > 0) | (target > 0)
    expected = ((raw - target)[keep] ** 2).mean()
    expected.backward()
    dense = grads(module)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name in dense:
        assert torch.allclose(sparse[name], dense[name], atol=1e-5), name


def test_cached_states_batch_back_to_the_backbone_output() -> None:
    module = tiny_module()
    tokenizer = multilingual_tokenizer()
    texts = ["der Hund", "green tea and the heart attack", "", "lava"]
    cached = encode_states(module.m_model, tokenizer, texts, max_length=16, batch_size=3)
    assert len(cached) == 4
    ids, mask, states = cached.batch([1, 0])
    enc = tokenizer([texts[1], texts[0]], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = module.m_model(**enc).last_hidden_state
    assert torch.equal(ids, enc["input_ids"] * enc["attention_mask"])
    assert torch.equal(mask, enc["attention_mask"])
    real = mask.bool()
    assert torch.allclose(states[real], expected[real], atol=2e-3)  # float16 storage
    assert float(masked_max(states, mask).abs().sum()) > 0


def test_batch_scores_are_the_dual_view_dot_products() -> None:
    module = tiny_module()
    q_states, q_mask = batch(3)
    d_states = torch.randn(6, 5, 24)
    d_mask = torch.ones(6, 5, dtype=torch.long)
    q_ids = torch.randint(0, 6, (3, 7))
    d_ids = torch.randint(0, 6, (6, 5))
    with torch.no_grad():
        scores, _, q_pivot, d_pivot, _ = batch_scores(module, (q_ids, q_mask, q_states), (d_ids, d_mask, d_states))
        q_echo = module.echo_weights(q_states, q_mask)
        d_echo = module.echo_weights(d_states, d_mask)
    assert scores.shape == (3, 6)
    for b in range(3):
        for d in range(6):
            echo = sum(float(q_echo[b, i] * d_echo[d, j]) for i in range(7) for j in range(5)
                       if q_ids[b, i] == d_ids[d, j] and q_mask[b, i])
            assert float(scores[b, d]) == pytest.approx(float(q_pivot[b] @ d_pivot[d]) + echo, rel=1e-4, abs=1e-5)


def tiny_sct_data(module: MilcoModule) -> tuple[CachedStates, CachedStates, np.ndarray]:
    """Four queries over six passages (query i's own passage is row i) and each query's group, positive first."""
    tokenizer = multilingual_tokenizer()
    docs = ["green tea", "heart attack", "der Hund", "lava flow", "blue sky", "tea pot"]
    queries = ["tea green", "attack heart", "Hund der", "flow lava"]
    d_states = encode_states(module.m_model, tokenizer, docs, max_length=16)
    q_states = encode_states(module.m_model, tokenizer, queries, max_length=16)
    return q_states, d_states, np.array([[0, 4, 5], [1, 4, 2], [2, 3, 4], [3, 0, 1]])


@pytest.mark.parametrize("distill_weight", [0.0, 1.0], ids=["infonce", "infonce+kl"])
def test_sct_steps_learn_to_rank_the_positive_first(tmp_path: Path, distill_weight: float) -> None:
    module = tiny_module()
    for p in module.m_model.parameters():
        p.requires_grad_(False)
    q_states, d_states, groups = tiny_sct_data(module)
    config = SctConfig(languages=["de"], output=tmp_path, lr=5e-2, batch_size=4, epochs=30, loss="infonce",
                       group_size=3, lambda_q=0.0, lambda_d=0.0, warmup_ratio=0.0, distill_weight=distill_weight)

    def top1() -> float:
        with torch.no_grad():
            d = d_states.batch([int(p) for r in range(4) for p in groups[r]])
            scores = batch_scores(module, q_states.batch(range(4)), d).scores
        return float((own_groups(scores, 3).argmax(-1) == 0).float().mean())

    before = top1()
    teacher = np.tile([0.9, 0.5, 0.4], (4, 1))  # cosines: the positive first (what the KL term distils)
    train_sct(module, q_states, d_states, groups, teacher, config)
    assert top1() == 1.0 and before < 1.0
    assert (tmp_path / "train.log.jsonl").read_text().count('"stage": "sct"') >= 1


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "sap.toml"
    bad.write_text('languages = []\noutput = "x"\nbatch_size = 0\n')
    with pytest.raises(ConfigError, match="languages.*batch_size|batch_size.*languages"):
        load_config(bad, SapConfig)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml", SapConfig)
    (tmp_path / "broken.toml").write_text("languages = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml", SapConfig)


MILCO_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("s[ac]*.toml"))


@pytest.mark.parametrize("path", MILCO_CONFIGS, ids=lambda p: p.stem)
def test_every_committed_milco_config_parses(path: Path) -> None:
    load_config(path, SapConfig if path.stem.startswith("sap") else SctConfig)


def test_distillation_adds_the_weighted_kl_to_infonce(tmp_path: Path) -> None:
    scores = torch.tensor([[5.0, 1.0, 0.0, 9.0], [0.0, 9.0, 2.0, 1.0]])
    teacher = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    nce, kl = ranking_loss(scores, 2, "infonce", None), ranking_loss(scores, 2, "kl", teacher)
    config = SctConfig(languages=["de"], output=tmp_path, loss="infonce", distill_weight=0.25)
    assert float(sct_ranking_loss(scores, 2, config, teacher, None)) == pytest.approx(float(nce + 0.25 * kl))
    assert float(sct_ranking_loss(scores, 2, config.model_copy(update={"distill_weight": 0.0}), teacher, None)) == \
        pytest.approx(float(nce))
    assert float(sct_ranking_loss(scores, 2, config.model_copy(update={"loss": "kl"}), teacher, None)) == \
        pytest.approx(float(kl))


def test_ranking_losses_pick_each_querys_own_group() -> None:
    scores = torch.tensor([[5.0, 1.0, 0.0, 9.0], [0.0, 9.0, 2.0, 1.0]])  # 2 queries, groups of 2
    teacher = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    kl = ranking_loss(scores, 2, "kl", teacher)
    own = torch.tensor([[5.0, 1.0], [2.0, 1.0]])
    expected = torch.nn.functional.kl_div(torch.log_softmax(own, -1), teacher, reduction="batchmean")
    assert kl.item() == pytest.approx(expected.item())
    nce = ranking_loss(scores, 2, "infonce", None)
    expected = torch.nn.functional.cross_entropy(scores, torch.tensor([0, 2]))
    assert nce.item() == pytest.approx(expected.item())
    # Query 1's positive (doc 7) also sits in query 0's group (column 1): not a negative for query 1.
    masked = ranking_loss(scores, 2, "infonce", None, doc_rows=torch.tensor([3, 7, 7, 5]))
    expected = torch.nn.functional.cross_entropy(
        torch.tensor([[5.0, 1.0, 0.0, 9.0], [0.0, float("-inf"), 2.0, 1.0]]), torch.tensor([0, 2])
    )
    assert masked.item() == pytest.approx(expected.item())


def test_cached_states_below_the_top_layers_rebuild_the_last_hidden_states() -> None:
    module = tiny_module()
    module.m_model.encoder.layer.append(type(module.m_model.encoder.layer[0])(module.m_model.config, layer_idx=1))
    module.m_model.config.num_hidden_layers = 2
    tokenizer = multilingual_tokenizer()
    texts = ["der Hund", "green tea and the heart attack"]
    below = encode_states(module.m_model, tokenizer, texts, max_length=16, below_top=1)
    last = encode_states(module.m_model, tokenizer, texts, max_length=16)
    ids, mask, states = below.batch([0, 1])
    _, _, expected = last.batch([0, 1])
    rebuilt = top_layers(module, states, mask, 1)
    assert torch.allclose(rebuilt[mask.bool()], expected[mask.bool()], atol=5e-3)
    assert not torch.allclose(states[mask.bool()], expected[mask.bool()], atol=5e-3)


def test_sap_resumes_from_its_checkpoint_on_the_same_batches(tmp_path: Path) -> None:
    tokenizer = multilingual_tokenizer()
    texts = ["der Hund", "green tea", "heart attack", "lava flow", "blue sky", "tea pot", "der Tee", "Vulkan"]

    def run(output: Path, stop_at: int | None = None) -> dict[str, torch.Tensor]:
        module = tiny_module()
        for p in module.m_model.parameters():
            p.requires_grad_(False)
        states = encode_states(module.m_model, tokenizer, texts, max_length=16)
        targets = torch.randn(len(texts), 50, generator=torch.Generator().manual_seed(4)).half()
        config = SapConfig(languages=["de"], output=output, lr=1e-2, batch_size=3, epochs=2, checkpoint_every=2,
                           english_term=False)
        calls = [0]

        def on_step() -> None:
            calls[0] += 1
            if calls[0] == stop_at:
                raise KeyboardInterrupt

        try:
            train_sap(module, targets, states, None, config, on_step=on_step)
        except KeyboardInterrupt:
            return {}
        return {k: v.clone() for k, v in module.state_dict().items()}

    straight = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_at=3) == {}  # killed after step 3; the checkpoint holds step 2
    resumed = run(tmp_path / "b")
    assert straight.keys() == resumed.keys()
    for k in straight:
        torch.testing.assert_close(straight[k], resumed[k], msg=k)
    log = (tmp_path / "b" / "train.log.jsonl").read_text()
    assert '"step": 6' in log


def test_sparsity_terms() -> None:
    pivot = torch.tensor([[2.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    assert sparsity(pivot, "l1").item() == pytest.approx(3.0)
    # FLOPS: the always-on term 0 dominates (mean 2 -> 4), the rare ones add 0.25 each.
    assert sparsity(pivot, "flops").item() == pytest.approx(4.5)


def test_common_terms_charge_only_terms_above_the_share() -> None:
    # term 0 fires in 3 of 4 vectors (excess 0.5 over 0.25) with mean weight 1.5; term 1 in 1 of 4 (no excess).
    pivot = torch.tensor([[2.0, 4.0], [2.0, 0.0], [2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    penalty = common_terms(pivot, 0.25)
    assert penalty.item() == pytest.approx(0.5 * 1.5)
    penalty.backward()
    assert pivot.grad[:, 1].abs().sum().item() == 0.0 and pivot.grad[0, 0].item() > 0


def test_top_k_targets_round_trip_to_dense_rows() -> None:
    logits = torch.tensor([[3.0, -1.0, 0.5, 2.0], [-2.0, -1.0, 1.0, -3.0]])
    indices, values = top_k_targets(logits, 2)
    assert indices.shape == (2, 2) and values.dtype == torch.float16
    dense = dense_targets(indices, values, 4)
    # The two largest positive logits of each row survive; the rest (and negatives) become 0.
    assert torch.equal(dense, torch.tensor([[3.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]]))


def test_damp_common_scales_terms_in_the_top_of_many_rows_by_their_rarity() -> None:
    # Term 7 is among the top 2 of all three rows (df 1), term 1 of one (df 1/3): at share 0.5 term 7 is scaled by
    # 0.5 everywhere, the others stay as they are.
    indices = torch.tensor([[7, 1, 5], [2, 7, 3], [7, 4, 6]])
    values = torch.tensor([[3.0, 2.0, 1.0], [4.0, 3.5, 1.0], [1.0, 0.9, 0.5]]).half()
    damped, common = damp_common(indices, values, 0.5, top=2)
    assert common == {7: 0.5}
    assert torch.equal(damped[indices == 7], values[indices == 7] * 0.5)
    assert torch.equal(damped[indices != 7], values[indices != 7])


def test_grounding_pulls_the_passage_pivot_toward_its_target(tmp_path: Path) -> None:
    module = tiny_module()
    tokenizer = multilingual_tokenizer()
    docs = ["green tea", "heart attack", "der Hund", "lava flow"]
    d_states = encode_states(module.m_model, tokenizer, docs, max_length=16)
    q_states = encode_states(module.m_model, tokenizer, ["tea", "heart", "Hund", "lava"], max_length=16)
    groups = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])
    vocab_size = head_decoder(module.mlm_head).out_features
    target = torch.zeros(4, vocab_size)
    target[:, 3] = 4.0  # every passage should weigh term 3 with raw logit 4 and nothing else
    ground = top_k_targets(target, 8)
    config = SctConfig(languages=["de"], output=tmp_path, lr=5e-2, batch_size=4, epochs=40, loss="infonce",
                       group_size=2, lambda_q=0.0, lambda_d=0.0, warmup_ratio=0.0, ground_weight=10.0)

    def error() -> float:
        with torch.no_grad():
            d = d_states.batch([int(p) for r in range(4) for p in groups[r]])
            out = batch_scores(module, q_states.batch(range(4)), d, d_target=target[groups.reshape(-1)])
        return float(out.ground)

    before = error()
    train_sct(module, q_states, d_states, groups, np.ones((4, 2)), config, ground=ground)
    assert error() < 0.5 * before
    assert '"ground"' in (tmp_path / "train.log.jsonl").read_text()


def test_hard_negatives_skip_translations_of_the_positive() -> None:
    from milco_os.training.pipeline import hard_negative_groups

    q = np.array([[1.0, 0.0]])
    d = np.array([[1.0, 0.0], [0.99, 0.14], [0.9, 0.43], [0.0, 1.0]])
    groups, _ = hard_negative_groups(q, d, [0], 2, doc_pages=np.array([7, 7, 8, 9]))
    assert groups.tolist() == [[0, 2]]  # row 1 is the same page in another language
    groups, _ = hard_negative_groups(q, d, [0], 2)
    assert groups.tolist() == [[0, 1]]
    # A keyword that also stands for page 8: that page is no negative either.
    groups, _ = hard_negative_groups(q, d, [0], 2, doc_pages=np.array([7, 7, 8, 9]), relevant=[frozenset({7, 8})])
    assert groups.tolist() == [[0, 3]]
    # A passage the teacher scores near the positive (0.99 and 0.9 of its 1.0) is likely relevant: above a ceiling
    # of 0.95 x the positive's score it is no negative; at 0.8 neither is 0.9's.
    assert hard_negative_groups(q, d, [0], 2, ceiling=0.95)[0].tolist() == [[0, 2]]
    assert hard_negative_groups(q, d, [0], 2, ceiling=0.8)[0].tolist() == [[0, 3]]


def test_align_pieces_pairs_overlapping_spans_and_special_tokens() -> None:
    # student: <s> "▁Libre" "Office" "▁help" </s>; teacher: [CLS] "libre" "##off" "##ice" "help" [SEP]
    student = [(0, 0), (0, 5), (5, 11), (12, 16), (0, 0)]
    teacher = [(0, 0), (0, 5), (5, 8), (8, 11), (12, 16), (0, 0)]
    assert align_pieces(student, teacher) == [[0], [1], [2, 3], [4], [5]]
    # A teacher cut short by truncation leaves the rest of the student's tokens without a target.
    assert align_pieces(student, [(0, 0), (0, 5), (0, 0)]) == [[0], [1], [], [], [2]]


def test_token_targets_follow_the_student_tokens_and_train_the_connector() -> None:
    from transformers import BertConfig, BertForMaskedLM

    from tests.unit.tiny_models import english_tokenizer

    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32)).eval()
    tokenizer, en_tokenizer = multilingual_tokenizer(), english_tokenizer()
    texts = ["the heart attack", "green tea and hot water", "solar panel"]
    targets = teacher_token_targets(teacher, en_tokenizer, tokenizer, texts, max_length=16)
    module = tiny_module()
    states = encode_states(module.m_model, tokenizer, texts, max_length=16)
    assert (targets.ids == states.ids).all() and targets.states.shape[1] == 16
    first = targets.states[: targets.offsets[1]].float()
    assert not torch.isnan(first[0]).any() and not torch.isnan(first[-1]).any()  # <s> and </s> have targets
    _, mask, hidden = states.batch([0, 1, 2])
    aligned = targets.batch([0, 1, 2])[2]
    before = token_loss(module, hidden, mask, aligned).item()
    optimizer = torch.optim.Adam([*module.projector.parameters(), *module.mlm_head.parameters()], lr=1e-2)
    for _ in range(100):
        loss = token_loss(module, hidden, mask, aligned)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * before


def test_training_without_a_progress_display_advances_as_the_trainers_call_it() -> None:
    # run_sap/run_sct called as a library (bench/reproduce_milco.py) pass no progress: the trainers advance per
    # step with no argument, the state encoders by a count.
    from milco_os.training.pipeline import _no_progress

    advance = _no_progress("SCT", 10)
    assert advance() is None and advance(4) is None


def test_sct_refuses_a_sap_delta_that_failed_its_gates(tmp_path: Path) -> None:
    import json

    from milco_os.training.pipeline import run_sct

    sap = tmp_path / "sap"
    sap.mkdir()
    (sap / "manifest.json").write_text(json.dumps({"gates": {"sap": {"overlap_en": 0.1, "passed": False}}}))
    config = SctConfig(languages=["de"], output=tmp_path / "sct", init=sap)
    with pytest.raises(ConfigError, match="did not pass the SAP gates.*allow_failed_init"):
        run_sct(config, tmp_path / "cache")


def test_cached_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    from milco_os.training.pipeline import _cached

    module = tiny_module()
    states = encode_states(module.m_model, multilingual_tokenizer(), ["der Hund", "green tea"], max_length=16)
    first = _cached(tmp_path / "s.pt", lambda: states)
    again = _cached(tmp_path / "s.pt", lambda: pytest.fail("computed twice"))
    assert (again.ids == first.ids).all() and (again.offsets == first.offsets).all()
    assert torch.equal(again.states, first.states)


def test_a_resumed_run_draws_the_random_numbers_an_unbroken_one_would(tmp_path: Path) -> None:
    """Dropout after a resume continues the saved random stream, not the seed's start or wherever it happens to be."""
    from milco_os.training.trainer import Run

    config = SapConfig(languages=["de"], output=tmp_path, lr=1e-2, batch_size=3, epochs=1, checkpoint_every=1,
                       english_term=False)
    first = Run(tiny_module(), config, "sap", 4, None, None)
    torch.manual_seed(1)
    torch.rand(5)  # what steps 1-2 drew
    first.save(2)
    first.close()
    unbroken = torch.rand(5)  # what step 3 draws
    torch.manual_seed(99)  # a new process starts elsewhere
    resumed = Run(tiny_module(), config, "sap", 4, None, None)
    resumed.close()
    assert resumed.first == 2
    torch.testing.assert_close(torch.rand(5), unbroken)


def test_a_resumed_run_counts_the_time_its_earlier_part_trained(tmp_path: Path) -> None:
    from milco_os.training.trainer import Run, trained_seconds

    config = SapConfig(languages=["de"], output=tmp_path, lr=1e-2, batch_size=3, epochs=1, checkpoint_every=1,
                       english_term=False)
    first = Run(tiny_module(), config, "sap", 4, None, None)
    first.log.start -= 100.0  # as if it had trained 100 s
    first.save(2)
    first.close()
    assert trained_seconds(tmp_path) >= 100.0
    resumed = Run(tiny_module(), config, "sap", 4, None, None)
    resumed.save(4)
    resumed.close()
    assert 100.0 <= trained_seconds(tmp_path) < 110.0


def test_a_continued_deltas_manifest_keeps_the_earlier_stages_not_the_earlier_run_of_its_own(tmp_path: Path) -> None:
    import json

    from milco_os.training.pipeline import _manifest

    init = tmp_path / "v1"
    init.mkdir()
    (init / "manifest.json").write_text(json.dumps({"training": {
        "sap": {"seed": 1}, "sap_pairs": 16000, "sct": {"seed": 1}, "sct_queries": 10000, "sct_seconds": 1372,
        "teacher_top1_in_group": 0.002}, "gates": {"sap": {"passed": False}}}))
    config = SctConfig(languages=["de"], output=tmp_path / "out", init=init)
    training = _manifest(config, {"step": 100, "gates": {"passed": True}})["training"]
    assert training["sap_pairs"] == 16000 and training["sap"] == {"seed": 1} and training["step"] == 100
    assert training["sct"]["init"] == str(init)
    assert not {"sct_queries", "sct_seconds", "teacher_top1_in_group"} & set(training)
