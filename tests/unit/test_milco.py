"""MILCO: the module's maths, both echo readings, and loading a checkpoint in the official layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from milco_os.errors import ModelError
from milco_os.loading import load_dir
from milco_os.models.milco import MilcoModule, dual_view_scores
from tests.unit.helpers import assert_same_encoding
from tests.unit.tiny_models import save_tiny_bert_milco, save_tiny_bert_mlm, save_tiny_xlmr

TEXTS = ["der Hund und Herzinfarkt", "green tea", "the heart attack and the heart", "Vulkan lava"]


def write_official_checkpoint(root: Path, *, echo: bool = True, with_teacher: bool = True) -> dict:
    """A tiny MILCO checkpoint written exactly as the official MILCOModel.save_pretrained does:
    config.json (model_type "milco", MILCOConfig fields) + pytorch_model.bin with m_model.*, projector.*,
    mlm_head.* (the English MLM head, BERT's ``cls``), echo.* and scale (and en_lsr.* for SAP checkpoints)."""
    m_dir, en_dir, ckpt = root / "m_encoder", root / "en_lsr", root / "milco"
    m_model, _ = save_tiny_xlmr(m_dir)
    en_model, _ = save_tiny_bert_mlm(en_dir)
    torch.manual_seed(3)
    projector = torch.nn.Linear(m_model.config.hidden_size, en_model.config.hidden_size)
    echo_layer = torch.nn.Linear(m_model.config.hidden_size, 1)
    with torch.no_grad():
        echo_layer.bias.fill_(0.5)  # most tokens get a positive echo weight
    scale = torch.tensor([1.7])
    state = {f"m_model.{k}": v for k, v in m_model.state_dict().items()}
    state.update({f"mlm_head.{k}": v for k, v in en_model.cls.state_dict().items()})
    state.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
    if echo:
        state.update({f"echo.{k}": v for k, v in echo_layer.state_dict().items()})
        state["scale"] = scale
    if with_teacher:
        state.update({f"en_lsr.{k}": v for k, v in en_model.state_dict().items()})
    ckpt.mkdir()
    torch.save(state, ckpt / "pytorch_model.bin")
    config = {
        "architectures": ["ContrastiveMILCOModel"],
        "model_type": "milco",
        "lsr_encoder_checkpoint": str(en_dir),
        "multilingual_encoder_checkpoint": str(m_dir),
        "model_variant": "bert",
        "en_vocab_size": en_model.config.vocab_size,
        "en_hidden_size": en_model.config.hidden_size,
        "m_vocab_size": m_model.config.vocab_size,
        "m_hidden_size": m_model.config.hidden_size,
        "echo": echo,
        "lambda_q": 0.001,
        "lambda_d": 1e-05,
        "sparse_reg": "l1",
    }
    (ckpt / "config.json").write_text(json.dumps(config))
    return {"dir": ckpt, "m_model": m_model, "en": en_model, "projector": projector, "echo": echo_layer, "scale": scale}


def reference_encode(parts: dict, tokenizer, text: str) -> tuple[dict[int, float], dict[int, float]]:  # noqa: ANN001
    """MILCO's encode as the official code computes it, written out by hand."""
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        h = parts["m_model"](**batch).last_hidden_state
        logits = parts["en"].cls(torch.nn.functional.gelu(parts["projector"](h)))
        pivot = torch.log1p(torch.relu(logits.max(dim=1).values))[0]
        token_w = (torch.relu(parts["echo"](h).squeeze(-1)) * parts["scale"])[0]
    echo: dict[int, float] = {}
    specials = set(tokenizer.all_special_ids)  # milco-os leaves <s>, </s> out of the echo view
    for token, w in zip(batch["input_ids"][0].tolist(), token_w.tolist(), strict=True):
        if w > 0 and token not in specials:
            echo[token] = echo.get(token, 0.0) + w
    return {i: float(pivot[i]) for i in torch.nonzero(pivot).flatten().tolist()}, echo


def as_dict(vec) -> dict[int, float]:  # noqa: ANN001
    return {int(i): float(w) for i, w in zip(vec.ids, vec.weights, strict=True)}


def test_official_layout_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    parts = write_official_checkpoint(tmp_path)
    encoder = load_dir(parts["dir"])
    assert encoder.info.family == "milco"
    assert encoder.info.pivot_vocab.name == "en-wordpiece" and len(encoder.info.pivot_vocab) == 26
    assert encoder.info.echo_vocab is not None and len(encoder.info.echo_vocab) == 64
    for text, got in zip(TEXTS, encoder.encode_documents(TEXTS), strict=True):
        pivot, echo = reference_encode(parts, encoder.tokenizer, text)
        assert as_dict(got.pivot).keys() == pivot.keys()
        np.testing.assert_allclose([as_dict(got.pivot)[k] for k in pivot], list(pivot.values()), rtol=1e-5)
        assert as_dict(got.echo).keys() == echo.keys()
        np.testing.assert_allclose([as_dict(got.echo)[k] for k in echo], list(echo.values()), rtol=1e-5)
    # Repeated source pieces are summed in the echo view; unlike the official code, <s> and </s> are left
    # out (they would add an almost constant bonus to every pair), unless the config asks for them.
    repeated = encoder.encode_documents(["the heart attack and the heart"])[0]
    terms = repeated.echo.to_terms()
    assert "</s>" not in terms and "<s>" not in terms and "▁heart" in terms
    config = json.loads((parts["dir"] / "config.json").read_text())
    (parts["dir"] / "config.json").write_text(json.dumps({**config, "echo_special_tokens": True}))
    assert "</s>" in load_dir(parts["dir"]).encode_documents(["the heart attack and the heart"])[0].echo.to_terms()


def test_mlp_connector_checkpoint_loads(tmp_path: Path) -> None:
    parts = write_official_checkpoint(tmp_path)
    state = torch.load(parts["dir"] / "pytorch_model.bin", weights_only=True)
    h_m, h_en = parts["m_model"].config.hidden_size, parts["en"].config.hidden_size
    torch.manual_seed(5)
    mlp = torch.nn.Sequential(torch.nn.Linear(h_m, 32), torch.nn.GELU(), torch.nn.Linear(32, h_en))
    state = {k: v for k, v in state.items() if not k.startswith("projector.")}
    state.update({f"projector.{k}": v for k, v in mlp.state_dict().items()})
    torch.save(state, parts["dir"] / "pytorch_model.bin")
    config = json.loads((parts["dir"] / "config.json").read_text())
    (parts["dir"] / "config.json").write_text(json.dumps({**config, "connector_hidden": 32}))
    encoder = load_dir(parts["dir"])
    parts["projector"] = mlp
    for text, got in zip(TEXTS, encoder.encode_documents(TEXTS), strict=True):
        pivot, _ = reference_encode(parts, encoder.tokenizer, text)
        assert as_dict(got.pivot).keys() == pivot.keys()
        np.testing.assert_allclose([as_dict(got.pivot)[k] for k in pivot], list(pivot.values()), rtol=1e-5)


def test_checkpoint_without_echo_has_no_echo_view(tmp_path: Path) -> None:
    parts = write_official_checkpoint(tmp_path, echo=False, with_teacher=False)
    encoder = load_dir(parts["dir"])
    assert encoder.info.echo_vocab is None
    assert len(encoder.encode_queries(["green tea"])[0].echo) == 0


def test_inconsistent_checkpoints_are_refused_naming_the_file(tmp_path: Path) -> None:
    parts = write_official_checkpoint(tmp_path)
    config_path = parts["dir"] / "config.json"
    config = json.loads(config_path.read_text())
    config["m_hidden_size"] = 999
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="m_hidden_size is 999"):
        load_dir(parts["dir"])

    config["m_hidden_size"] = parts["m_model"].config.hidden_size
    config_path.write_text(json.dumps(config))
    state = torch.load(parts["dir"] / "pytorch_model.bin", weights_only=True)
    del state["projector.weight"]
    torch.save(state, parts["dir"] / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"pytorch_model.bin does not match.*projector.weight"):
        load_dir(parts["dir"])

    (parts["dir"] / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match="no weights file"):
        load_dir(parts["dir"])


def test_missing_checkpoint_reference_is_named(tmp_path: Path) -> None:
    parts = write_official_checkpoint(tmp_path)
    config = json.loads((parts["dir"] / "config.json").read_text())
    config["lsr_encoder_checkpoint"] = "not-a-dir"
    (parts["dir"] / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="lsr_encoder_checkpoint 'not-a-dir'"):
        load_dir(parts["dir"])


def tiny_module(echo_impl: str | None, mask_special_tokens: bool = False) -> MilcoModule:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    m = XLMRobertaModel(
        XLMRobertaConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40, pad_token_id=1)
    ).eval()
    en = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32)).eval()
    return MilcoModule(m, en.cls, encoder_hidden=24, head_hidden=16, echo_impl=echo_impl,
                       special_token_ids=[0, 2], mask_special_tokens=mask_special_tokens).eval()


def test_paper_echo_is_a_decoder_row_on_the_connector_output() -> None:
    module = tiny_module("paper")
    with torch.no_grad():
        module.echo_row.bias.fill_(0.3)
    ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        _, echo = module(ids, mask)
        h = module.m_model(input_ids=ids, attention_mask=mask).last_hidden_state
        z = module.mlm_head.predictions.transform(torch.nn.functional.gelu(module.projector(h)))
        expected = torch.log1p(torch.relu(module.echo_row(z).squeeze(-1))) * mask
    torch.testing.assert_close(echo, expected)
    assert echo[0, -1] == 0 and (echo >= 0).all() and echo.sum() > 0


def test_invalid_echo_impl_is_refused() -> None:
    with pytest.raises(ValueError, match="echo_impl"):
        tiny_module("both")


def test_special_tokens_can_be_masked_from_pivot_pooling() -> None:
    ids = torch.tensor([[0, 5, 6, 2]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        kept, _ = tiny_module("code")(ids, mask)
        masked, _ = tiny_module("code", mask_special_tokens=True)(ids, mask)
        only_content, _ = tiny_module("code")(ids, mask)  # same weights (same seed)
        module = tiny_module("code")
        h = module.m_model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = module.mlm_head(torch.nn.functional.gelu(module.projector(h)))[:, 1:3]
        expected = torch.log1p(torch.relu(logits.max(dim=1).values))
    torch.testing.assert_close(masked, expected)
    torch.testing.assert_close(kept, only_content)
    assert not torch.allclose(kept, masked)


def test_dual_view_scores_equal_dot_products_of_summed_views() -> None:
    module = tiny_module("code")
    with torch.no_grad():
        module.echo.bias.fill_(0.2)
    q_ids = torch.tensor([[0, 5, 6, 5, 2], [0, 9, 2, 1, 1]])
    d_ids = torch.tensor([[0, 6, 5, 7, 2, 1], [0, 8, 9, 9, 9, 2]])
    q_mask, d_mask = (q_ids != 1).long(), (d_ids != 1).long()
    with torch.no_grad():
        qp, qe = module(q_ids, q_mask)
        dp, de = module(d_ids, d_mask)
        scores = dual_view_scores(qp, q_ids, qe, dp, d_ids, de)

    def summed(ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.zeros(50).index_add_(0, ids, w)

    for i in range(2):
        for j in range(2):
            expected = (qp[i] * dp[j]).sum() + (summed(q_ids[i], qe[i]) * summed(d_ids[j], de[j])).sum()
            torch.testing.assert_close(scores[i, j], expected)


# ------------------------------------------------------------------------------ fast path (milco-mini layout)
LONG_TEXT = " ".join(["der Hund und der Tee", "the heart attack", "Vulkan lava sun"] * 6)


def slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make load_dir take the transformers path: transformers modules and transformers tokenizers."""
    import milco_os.models.bert as bert_modules
    import milco_os.models.tokenizer as tokenizer_module

    monkeypatch.setattr(bert_modules, "supported", lambda config: False)
    monkeypatch.setattr(tokenizer_module, "_fast_verdict", lambda directory: None)


def test_bert_modules_are_bit_identical_to_transformers() -> None:
    from transformers import BertModel
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    from milco_os.models import bert

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=40, max_position_embeddings=64, pad_token_id=1)
    reference, reference_head = BertModel(config, add_pooling_layer=False).eval(), BertOnlyMLMHead(config).eval()
    assert bert.supported(config.to_dict())
    shape = bert.BertShape.from_config(config.to_dict())
    with torch.device("meta"):
        ours, head = bert.BertModel(shape), bert.BertOnlyMLMHead(shape)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    head.load_state_dict(reference_head.state_dict(), strict=True, assign=True)
    for batch, length, padded in [(1, 1, False), (1, 9, False), (3, 9, True), (4, 33, True), (2, 64, True)]:
        ids = torch.randint(0, 50, (batch, length))
        mask = torch.ones_like(ids)
        if padded:
            mask[0, length // 2 :] = 0
            ids[0, length // 2 :] = 1
        with torch.inference_mode():
            want = reference(input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
            assert torch.equal(want, got), (batch, length, (want - got).abs().max())
            assert torch.equal(reference_head(want), head(got))


def test_unsupported_bert_configs_take_the_transformers_path() -> None:
    from milco_os.models import bert

    config = BertConfig(hidden_size=24, num_attention_heads=4).to_dict()
    assert bert.supported(config)
    for change in ({"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"}, {"is_decoder": True},
                   {"dtype": "bfloat16"}, {"model_type": "xlm-roberta"}, {"hidden_size": None}):
        assert not bert.supported({**config, **change}), change


def test_fast_path_encodes_as_the_transformers_path_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milco_os.models import bert
    from milco_os.models.tokenizer import FastTokenizer

    ckpt = save_tiny_bert_milco(tmp_path)
    first = load_dir(ckpt)  # the tokenizers' verdicts are recorded on this first load
    fast = load_dir(ckpt)
    assert isinstance(fast.model.m_model, bert.BertModel) and isinstance(fast.tokenizer, FastTokenizer)
    assert not any(p.is_meta for p in fast.model.parameters())
    with monkeypatch.context() as m:
        slow_path(m)
        slow = load_dir(ckpt)
    assert type(slow.model.m_model).__module__.startswith("transformers.")
    assert not isinstance(slow.tokenizer, FastTokenizer)

    # The dense view runs the backbone's layers one by one: the plain-torch path has it, transformers' has not.
    assert fast.info.dense is not None and first.info.dense == fast.info.dense and slow.info.dense is None
    for info in (slow.info, first.info):
        assert dataclasses.replace(info, pivot_vocab=None, echo_vocab=None, dense=None) == dataclasses.replace(
            fast.info, pivot_vocab=None, echo_vocab=None, dense=None)  # name, family, fingerprint, lengths, details
        assert info.pivot_vocab.tokens == fast.info.pivot_vocab.tokens
        assert info.echo_vocab.tokens == fast.info.echo_vocab.tokens
    assert fast.model.special_token_ids.tolist() == slow.model.special_token_ids.tolist()
    texts = [*TEXTS, LONG_TEXT, "", "Herzinfarkt"]  # LONG_TEXT is windowed (24-token documents)
    for kind in ("encode_queries", "encode_documents"):
        for a, b in zip(getattr(fast, kind)(texts), getattr(slow, kind)(texts), strict=True):
            assert_same_encoding(a, b)
    assert len(fast.encode_documents([LONG_TEXT])[0].echo) > 0


def test_fast_path_refuses_inconsistent_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ckpt = save_tiny_bert_milco(tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    save_file({k: v for k, v in state.items() if k != "projector.0.weight"}, str(ckpt / "model.safetensors"))
    with pytest.raises(ModelError, match=r"model.safetensors does not match.*projector.0.weight"):
        load_dir(ckpt)
    state["projector.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(ModelError, match=r"model.safetensors does not match"):
        load_dir(ckpt)


# ------------------------------------------------------------------------------------------ fingerprints
def test_fingerprints_are_read_from_the_files_without_loading(tmp_path: Path) -> None:
    from milco_os.models import layouts

    official = write_official_checkpoint(tmp_path / "official")["dir"]
    assembled = save_tiny_bert_milco(tmp_path / "assembled")
    save_tiny_bert_mlm(tmp_path / "mlm")
    for path in (official, assembled, tmp_path / "mlm"):
        assert layouts.fingerprint(path) == load_dir(path).info.fingerprint, path
    assert layouts.family_of(official) == layouts.family_of(assembled) == "milco"
    assert layouts.family_of(tmp_path / "mlm") == "splade"


def test_fingerprints_are_remembered_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milco_os.models import files

    save_tiny_bert_mlm(tmp_path / "mlm")
    path, names = tmp_path / "mlm", ["config.json", "model.safetensors"]
    value = files.fingerprint_dir(path, names)
    assert (path / files.FINGERPRINT_CACHE_FILE).is_file()
    files._memo.clear()

    def no_hashing(*args: object) -> str:
        raise AssertionError("hashed again")

    with monkeypatch.context() as m:
        m.setattr(files, "_hash_files", no_hashing)
        assert files.fingerprint_dir(path, names) == value  # from the file, not hashed
        files._memo.clear()
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "note": "changed"}))
        with pytest.raises(AssertionError, match="hashed again"):
            files.fingerprint_dir(path, names)
    changed = files.fingerprint_dir(path, names)
    assert changed != value and changed == files._hash_files(path, names)
    # a read-only directory is hashed every time, without an error
    files._memo.clear()
    (path / files.FINGERPRINT_CACHE_FILE).unlink()
    monkeypatch.setattr(files, "_write_fingerprint_cache", lambda *a: None)
    assert files.fingerprint_dir(path, names) == changed


def test_one_load_of_milco_mini_reads_each_config_json_once(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 31: the family, the layout, the fingerprint and each loader read config.json again (five times for the
    model's own). The directory is now read once into a ModelDir that every step takes."""
    import builtins
    import io
    from collections import Counter

    from milco_os.loading import load_encoder, resolve_model

    path, _ = resolve_model("milco-mini", cache_dir)  # built (or found) before counting
    reads: Counter[str] = Counter()
    real_open = io.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(str(file)).name == "config.json":
            reads[str(Path(file).resolve())] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    encoder = load_encoder("milco-mini", cache_dir)
    monkeypatch.undo()
    assert encoder.info.family == "milco"
    assert reads[str((path / "config.json").resolve())] == 1, reads
    assert set(reads.values()) == {1}, reads  # the backbone's and the English head's too
