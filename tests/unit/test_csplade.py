"""CSPLADE: chunked pooling, the three attention variants, LoRA merging, loading a directory, adaptation loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from milco_os.errors import ModelError
from milco_os.loading import load_dir
from milco_os.models import layouts
from milco_os.models.csplade import (
    VARIANTS,
    CSpladeModule,
    adaptation_loss,
    load_csplade_dir,
    make_bidirectional,
    merge_lora,
)
from milco_os.models.pooling import splade_pool
from milco_os.models.sources import csplade_mini
from milco_os.types import ModelInfo, Vocab

VOCAB = 300
ATTN = ("sdpa", "eager")
WORDS = "the a heart attack blood tea green water hot cold dog cat sun energy solar panel volcano lava".split()


def tiny_lm(attn: str = "sdpa", seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama (GQA: 4 heads, 2 KV heads); a larger init range keeps logit differences clear."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.1, bos_token_id=0, eos_token_id=1,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).eval()


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-like: <s> prefix only, an EOS, and no pad token (the loader must fall back to EOS)."""
    vocab = ["<s>", "</s>", "<unk>", *WORDS]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_tiny(directory: Path, seed: int = 0) -> LlamaForCausalLM:
    lm = tiny_lm(seed=seed)
    lm.save_pretrained(directory)
    llama_tokenizer().save_pretrained(directory)
    return lm


def batch(*rows: list[int], pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


SHORT = [0, 17, 42, 99]
LONG = [0, 5, 250, 7, 8, 9, 120, 33, 61]


# ------------------------------------------------------------------------------------------ pooling
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 64])
def test_chunked_pooling_equals_full_logits(chunk_size: int) -> None:
    lm = tiny_lm()
    ids, mask = batch(SHORT, LONG)
    with torch.no_grad():
        naive = splade_pool(lm(input_ids=ids, attention_mask=mask).logits, mask)
        pivot, echo = CSpladeModule(lm, "causal", chunk_size=chunk_size)(ids, mask)
    assert pivot.shape == (2, VOCAB) and echo.shape == ids.shape
    assert torch.all(echo == 0)
    assert (pivot > 0).sum() > 10  # not trivially all zero
    torch.testing.assert_close(pivot, naive, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_chunk_size_does_not_change_any_variant(variant: str) -> None:
    ids, mask = batch(SHORT, LONG)
    with torch.no_grad():
        small = CSpladeModule(tiny_lm(), variant, chunk_size=1)(ids, mask)[0]
        large = CSpladeModule(tiny_lm(), variant, chunk_size=1000)(ids, mask)[0]
    torch.testing.assert_close(small, large, rtol=1e-5, atol=1e-6)


def test_bad_variant_and_chunk_size() -> None:
    with pytest.raises(ValueError, match="causal, echo, bi"):
        CSpladeModule(tiny_lm(), "bidirectional")
    with pytest.raises(ValueError, match="chunk_size"):
        CSpladeModule(tiny_lm(), "causal", chunk_size=0)


# ------------------------------------------------------------------------------------------ variants
@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("variant", VARIANTS)
def test_right_padding_invariance(variant: str, attn: str) -> None:
    module = CSpladeModule(tiny_lm(attn), variant, chunk_size=2)
    with torch.no_grad():
        alone = module(*batch(SHORT))[0][0]
        padded = module(*batch(SHORT, LONG))[0][0]
        long_alone = module(*batch(LONG))[0][0]
        long_batched = module(*batch(SHORT, LONG))[0][1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(long_batched, long_alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("variant", VARIANTS)
def test_pads_never_influence_real_tokens(variant: str, attn: str) -> None:
    module = CSpladeModule(tiny_lm(attn), variant)
    ids, mask = batch(SHORT, LONG, pad=1)
    other = ids.clone()
    other[mask == 0] = torch.randint(2, VOCAB, (int((mask == 0).sum()),))
    with torch.no_grad():
        a, b = module(ids, mask)[0], module(other, mask)[0]
        if variant != "echo":
            ha, hb = module.hidden_states(ids, mask), module.hidden_states(other, mask)
            torch.testing.assert_close(ha[mask == 1], hb[mask == 1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attn", ATTN)
def test_bi_is_bidirectional_and_causal_is_not(attn: str) -> None:
    changed = [*LONG[:-1], 201]
    ids, mask = batch(LONG, changed)
    with torch.no_grad():
        causal = CSpladeModule(tiny_lm(attn), "causal").hidden_states(ids, mask)
        bi = CSpladeModule(tiny_lm(attn), "bi").hidden_states(ids, mask)
    # causal: the first L-1 positions cannot see the last token
    torch.testing.assert_close(causal[0, :-1], causal[1, :-1], rtol=1e-6, atol=1e-6)
    # bi: every position sees it, the first one included
    assert (bi[0, 0] - bi[1, 0]).abs().max() > 1e-4
    assert (bi[0, :-1] - bi[1, :-1]).abs().amax(dim=-1).min() > 1e-5


@pytest.mark.parametrize("attn", ATTN)
def test_bi_flag_route_matches_explicit_mask(attn: str) -> None:
    """make_bidirectional alone (config/module is_causal=False, transformers' own mask) gives the same hidden
    states as the explicit 4D mask, with and without padding (the no-padding case lets sdpa skip the mask)."""
    module = CSpladeModule(tiny_lm(attn), "bi")
    plain = tiny_lm(attn)
    make_bidirectional(plain)
    for ids, mask in (batch(SHORT, LONG), batch(LONG)):
        with torch.no_grad():
            explicit = module.hidden_states(ids, mask)
            flags = plain.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        torch.testing.assert_close(explicit[mask == 1], flags[mask == 1], rtol=1e-5, atol=1e-5)


def test_echo_pools_only_the_second_copy() -> None:
    lm = tiny_lm()
    n = len(LONG)
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([LONG + LONG])).logits[0]  # unpadded [x ; x]
        second = torch.log1p(torch.relu(logits[n:].max(dim=0).values))
        both = torch.log1p(torch.relu(logits.max(dim=0).values))
        echo = CSpladeModule(lm, "echo")(*batch(SHORT, LONG))[0][1]
        causal = CSpladeModule(tiny_lm(), "causal")(*batch(LONG))[0][0]
    torch.testing.assert_close(echo, second, rtol=1e-5, atol=1e-6)
    assert (echo - both).abs().max() > 1e-4
    assert (echo - causal).abs().max() > 1e-4


def test_variants_differ() -> None:
    ids, mask = batch(SHORT, LONG)
    with torch.no_grad():
        out = {v: CSpladeModule(tiny_lm(), v)(ids, mask)[0] for v in VARIANTS}
    assert (out["bi"] - out["causal"]).abs().max() > 1e-4
    assert (out["bi"] - out["echo"]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------ LoRA
def lora_wrapped(lm: LlamaForCausalLM):  # noqa: ANN201
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(7)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return peft_model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_lora_keeps_vectors(variant: str) -> None:
    ids, mask = batch(SHORT, LONG)
    with torch.no_grad():
        base = CSpladeModule(tiny_lm(), variant)(ids, mask)[0]
        peft_model = lora_wrapped(tiny_lm())
        before = CSpladeModule(peft_model, variant)(ids, mask)[0]
        merged = merge_lora(peft_model)
        assert type(merged) is LlamaForCausalLM
        after = CSpladeModule(merged, variant)(ids, mask)[0]
    assert (before - base).abs().max() > 1e-3  # the adapter does change the vectors
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_merge_lora_leaves_plain_models_alone() -> None:
    lm = tiny_lm()
    assert merge_lora(lm) is lm


# ------------------------------------------------------------------------------------------ loading
def test_load_dir_encodes_over_the_lm_vocabulary(tmp_path: Path) -> None:
    lm = save_tiny(tmp_path / "lm")
    encoder = load_csplade_dir(tmp_path / "lm", "tiny-csplade")
    info = encoder.info
    assert info.family == "csplade" and info.echo_vocab is None and not encoder.has_echo
    assert len(info.pivot_vocab) == VOCAB and info.pivot_vocab.tokens[3] == "the"
    assert (info.max_query_length, info.max_document_length) == (64, 256)
    assert info.details["variant"] == "causal"
    assert encoder.tokenizer.pad_token == "</s>"
    texts = ["hot green tea", "the dog and the cat sun"]
    encoded = encoder.encode_queries(texts)
    for e in encoded:
        assert e.pivot.vocab is info.pivot_vocab and len(e.pivot) > 10
        assert np.all(e.pivot.weights > 0) and np.all((e.pivot.ids >= 0) & (e.pivot.ids < VOCAB))
        assert len(e.echo) == 0
    # the same numbers as the module on the same tokens
    ids = encoder.tokenizer(texts[0])["input_ids"]
    with torch.no_grad():
        expected = CSpladeModule(lm, "causal")(*batch(ids))[0][0].numpy()
    dense = np.zeros(VOCAB, dtype=np.float32)
    dense[encoded[0].pivot.ids] = encoded[0].pivot.weights
    np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-6)
    # milco_os.loading routes *ForCausalLM directories here
    assert load_dir(tmp_path / "lm").info.family == "csplade"


def test_sidecar_and_variant_override(tmp_path: Path) -> None:
    save_tiny(tmp_path)
    sidecar = {"variant": "echo", "chunk_size": 3, "max_query_length": 16, "max_document_length": 40}
    (tmp_path / "csplade_config.json").write_text(json.dumps(sidecar))
    echo = load_csplade_dir(tmp_path, "m")
    assert echo.info.details["variant"] == "echo" and echo.model.variant == "echo" and echo.model.chunk_size == 3
    assert (echo.info.max_query_length, echo.info.max_document_length) == (16, 40)
    bi = load_csplade_dir(tmp_path, "m", variant="bi")
    assert bi.info.details["variant"] == "bi" and bi.model.variant == "bi"
    causal = load_csplade_dir(tmp_path, "m", variant="causal")
    fingerprints = {e.info.fingerprint for e in (echo, bi, causal)}
    assert len(fingerprints) == 3 and all(f.startswith("sha256:") for f in fingerprints)
    assert load_csplade_dir(tmp_path, "m", variant="bi").info.fingerprint == bi.info.fingerprint
    # the fingerprint the loading factory reads off the files, without loading, is the loaded one
    assert layouts.fingerprint(tmp_path) == echo.info.fingerprint == load_dir(tmp_path).info.fingerprint
    assert layouts.fingerprint(tmp_path, variant="bi") == bi.info.fingerprint
    assert layouts.fingerprint(tmp_path, variant="causal") == causal.info.fingerprint
    a, b = (e.encode_queries(["hot green tea"])[0].pivot for e in (echo, causal))
    assert not (np.array_equal(a.ids, b.ids) and np.allclose(a.weights, b.weights))


def write_sidecar(directory: Path, **keys: object) -> None:
    (directory / "csplade_config.json").write_text(json.dumps(keys))


def test_sidecar_top_k_keeps_the_heaviest_pivot_terms(tmp_path: Path) -> None:
    """query_top_k / document_top_k (a model trained with top-k masking): every vector holds at most k pivot
    terms, the k heaviest of the unpruned model's vector (ties by id), also for a document split into windows."""
    save_tiny(tmp_path)
    write_sidecar(tmp_path, max_document_length=6)  # short windows: the long text below spans several
    full = load_csplade_dir(tmp_path, "m")
    assert (full.info.query_top_k, full.info.document_top_k) == (None, None)
    write_sidecar(tmp_path, max_document_length=6, query_top_k=None, document_top_k=None)  # null = absent
    assert layouts.fingerprint(tmp_path) == full.info.fingerprint
    write_sidecar(tmp_path, max_document_length=6, query_top_k=2, document_top_k=3)
    pruned = load_csplade_dir(tmp_path, "m")
    assert (pruned.info.query_top_k, pruned.info.document_top_k) == (2, 3)
    # the top-k changes the vectors, so it changes the fingerprint (index _meta checks), read off the files too
    assert pruned.info.fingerprint != full.info.fingerprint
    assert layouts.fingerprint(tmp_path) == pruned.info.fingerprint == load_dir(tmp_path).info.fingerprint
    texts = ["hot green tea", "the dog and the cat sun solar panel volcano lava water heart attack blood"]
    for k, got, want in (
        (2, pruned.encode_queries(texts), full.encode_queries(texts)),
        (3, pruned.encode_documents(texts), full.encode_documents(texts)),
    ):
        for g, w in zip(got, want, strict=True):
            assert len(w.pivot) > 10 and len(g.pivot) == k
            top = w.pivot.sorted()
            np.testing.assert_array_equal(np.sort(g.pivot.ids), np.sort(top.ids[:k]))
            assert g.pivot.to_terms() == dict(list(w.pivot.to_terms().items())[:k])
            assert len(g.echo) == len(w.echo) == 0  # no echo view here; the rule never touches it
    assert pruned.encode_documents([""])[0].pivot.ids.size == 0


@pytest.mark.parametrize("key", ["query_top_k", "document_top_k"])
@pytest.mark.parametrize("value", [0, -1, "x", 2.5, True])
def test_sidecar_rejects_bad_top_k(tmp_path: Path, key: str, value: object) -> None:
    save_tiny(tmp_path)
    write_sidecar(tmp_path, **{key: value})
    with pytest.raises(ModelError, match=f"csplade_config.json: {key} is {value!r}; expected a positive integer"):
        load_csplade_dir(tmp_path, "m")
    with pytest.raises(ModelError, match=key):
        layouts.fingerprint(tmp_path)


def test_model_info_top_k_must_be_positive() -> None:
    vocab = Vocab("v", ("a", "b"))
    assert ModelInfo("m", "csplade", "sha256:0", vocab, None, query_top_k=1).query_top_k == 1
    with pytest.raises(ValueError, match="document_top_k is 0"):
        ModelInfo("m", "csplade", "sha256:0", vocab, None, document_top_k=0)


def test_csplade_mini_manifest_passes_top_k_to_the_sidecar(tmp_path: Path) -> None:
    """The training driver writes query_top_k / document_top_k into manifest.json (null: no masking)."""
    keys = {"variant": "bi", "max_query_length": 8, "max_document_length": 16}
    manifest = {"name": "csplade-mini", **keys}
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "query_top_k": 16, "document_top_k": 64}))
    read = csplade_mini.read_manifest(tmp_path)
    assert csplade_mini.sidecar(read) == {**keys, "query_top_k": 16, "document_top_k": 64}
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "query_top_k": None, "document_top_k": None}))
    assert csplade_mini.sidecar(csplade_mini.read_manifest(tmp_path)) == keys
    for key, value in (("query_top_k", 0), ("document_top_k", "64")):
        (tmp_path / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(ModelError, match=f"{key} is {value!r}"):
            csplade_mini.read_manifest(tmp_path)


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_csplade_dir(tmp_path / "empty", "m")
    with pytest.raises(ModelError, match="no config.json"):  # neither a gguf nor an adapter: not CSPLADE
        layouts.family_of(tmp_path / "empty")
    save_tiny(tmp_path / "lm")
    with pytest.raises(ModelError, match="'sideways'.*causal, echo, bi"):
        load_csplade_dir(tmp_path / "lm", "m", variant="sideways")
    (tmp_path / "lm" / "csplade_config.json").write_text(json.dumps({"variant": "mirror"}))
    with pytest.raises(ModelError, match="csplade_config.json.*'mirror'"):
        load_csplade_dir(tmp_path / "lm", "m")
    (tmp_path / "lm" / "csplade_config.json").write_text(json.dumps({"varient": "bi"}))
    with pytest.raises(ModelError, match="unknown keys.*varient"):
        load_csplade_dir(tmp_path / "lm", "m")
    (tmp_path / "lm" / "csplade_config.json").unlink()
    (tmp_path / "lm" / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights file"):
        load_csplade_dir(tmp_path / "lm", "m")


def test_load_lora_adapter_dir(tmp_path: Path) -> None:
    save_tiny(tmp_path / "base")
    peft_model = lora_wrapped(LlamaForCausalLM.from_pretrained(tmp_path / "base"))
    peft_model.save_pretrained(tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "../base"  # relative to the adapter directory
    config_file.write_text(json.dumps(config))
    encoder = load_csplade_dir(tmp_path / "adapter", "lora", variant="bi")
    assert type(encoder.model.lm) is LlamaForCausalLM  # merged, no LoRA layers left
    ids = encoder.tokenizer("hot green tea")["input_ids"]
    with torch.no_grad():
        expected = CSpladeModule(peft_model, "bi")(*batch(ids))[0][0].numpy()
    got = encoder.encode_queries(["hot green tea"])[0].pivot
    dense = np.zeros(VOCAB, dtype=np.float32)
    dense[got.ids] = got.weights
    np.testing.assert_allclose(dense, expected, rtol=1e-4, atol=1e-5)
    assert encoder.info.fingerprint != load_csplade_dir(tmp_path / "base", "b", variant="bi").info.fingerprint
    assert layouts.csplade_layout(tmp_path / "adapter", "bi").fingerprint == encoder.info.fingerprint
    # An adapter directory has no config.json of its own: the loading factory routes it here too.
    assert layouts.family_of(tmp_path / "adapter") == "csplade"
    assert layouts.fingerprint(tmp_path / "adapter", variant="bi") == encoder.info.fingerprint
    assert load_dir(tmp_path / "adapter", variant="bi").info.fingerprint == encoder.info.fingerprint

    config["base_model_name_or_path"] = "org/not-here"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not-here.*not a local directory"):
        load_csplade_dir(tmp_path / "adapter", "lora")


def write_tiny_gguf(lm: LlamaForCausalLM, file: Path) -> None:
    """``lm`` as a float32 llama GGUF, written the way llama.cpp's converter does (q/k rows permuted)."""
    import gguf

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    c = lm.config
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_embedding_length(c.hidden_size)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in lm.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    writer.add_tensor("output.weight", sd["lm_head.weight"])
    names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }
    for i in range(c.num_hidden_layers):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = permute(w, c.num_attention_heads)
            elif gg == "attn_k":
                w = permute(w, c.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gg}.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_load_gguf_dir(tmp_path: Path) -> None:
    lm = tiny_lm()
    write_tiny_gguf(lm, tmp_path / "tiny-f32.gguf")
    llama_tokenizer().save_pretrained(tmp_path)
    encoder = load_csplade_dir(tmp_path, "gguf", variant="echo")
    assert encoder.info.details["gguf_file"] == "tiny-f32.gguf" and len(encoder.info.pivot_vocab) == VOCAB
    ids, mask = batch(SHORT, LONG)
    with torch.no_grad():
        expected = CSpladeModule(lm, "echo")(ids, mask)[0]
        got = encoder.model(ids, mask)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # No config.json: the loading factory still routes the directory to CSPLADE, with the same fingerprint.
    assert not (tmp_path / "config.json").exists() and layouts.family_of(tmp_path) == "csplade"
    assert layouts.fingerprint(tmp_path, variant="echo") == encoder.info.fingerprint
    routed = load_dir(tmp_path, variant="echo")
    assert routed.info.fingerprint == encoder.info.fingerprint and routed.info.details["gguf_file"] == "tiny-f32.gguf"
    with torch.no_grad():
        torch.testing.assert_close(routed.model(ids, mask)[0], expected, rtol=1e-5, atol=1e-6)
    write_tiny_gguf(lm, tmp_path / "second.gguf")
    with pytest.raises(ModelError, match="several"):
        load_csplade_dir(tmp_path, "gguf")


@pytest.mark.parametrize("variant", ["echo", "bi"])
def test_onnx_export_matches_torch_at_every_length(tmp_path: Path, variant: str) -> None:
    """The traced graph takes the one-chunk path (a traced chunk loop would be unrolled for one length)."""
    from milco_os.runtime.export import export_onnx
    from milco_os.runtime.onnx_runtime import load_onnx_dir

    save_tiny(tmp_path / "lm")
    encoder = load_csplade_dir(tmp_path / "lm", "t", variant=variant)
    export_onnx(encoder, tmp_path / "onnx")
    onnx = load_onnx_dir(tmp_path / "onnx")
    for text in ["a", "hot green tea", "the dog and the cat sun solar panel volcano lava water heart attack"]:
        a, b = encoder.encode_documents([text])[0].pivot, onnx.encode_documents([text])[0].pivot
        dense = np.zeros((2, VOCAB), dtype=np.float32)
        dense[0, a.ids], dense[1, b.ids] = a.weights, b.weights
        np.testing.assert_allclose(dense[1], dense[0], rtol=1e-4, atol=1e-5)


def test_onnx_export_keeps_the_top_k(tmp_path: Path) -> None:
    from milco_os.runtime.export import export_onnx
    from milco_os.runtime.onnx_runtime import load_onnx_dir

    save_tiny(tmp_path / "lm")
    write_sidecar(tmp_path / "lm", query_top_k=2, document_top_k=3)
    encoder = load_csplade_dir(tmp_path / "lm", "t")
    export_onnx(encoder, tmp_path / "onnx")
    record = json.loads((tmp_path / "onnx" / "milco_os_model.json").read_text())
    assert (record["query_top_k"], record["document_top_k"]) == (2, 3)
    onnx = load_onnx_dir(tmp_path / "onnx")
    assert (onnx.info.query_top_k, onnx.info.document_top_k) == (2, 3)
    assert onnx.info.fingerprint == encoder.info.fingerprint
    texts = ["hot green tea", "the dog and the cat sun solar panel volcano lava water heart attack"]
    for k, a, b in ((2, encoder.encode_queries(texts), onnx.encode_queries(texts)),
                    (3, encoder.encode_documents(texts), onnx.encode_documents(texts))):
        for x, y in zip(a, b, strict=True):
            assert len(x.pivot) == len(y.pivot) == k
            np.testing.assert_array_equal(x.pivot.sorted().ids, y.pivot.sorted().ids)
            np.testing.assert_allclose(x.pivot.sorted().weights, y.pivot.sorted().weights, rtol=1e-4, atol=1e-5)
    # an export written before these keys existed loads without a top-k
    for key in ("query_top_k", "document_top_k"):
        del record[key]
    (tmp_path / "onnx" / "milco_os_model.json").write_text(json.dumps(record))
    old = load_onnx_dir(tmp_path / "onnx")
    assert (old.info.query_top_k, old.info.document_top_k) == (None, None)
    assert len(old.encode_documents(texts[:1])[0].pivot) > 10


# ------------------------------------------------------------------------------------------ adaptation
def test_adaptation_loss_matches_manual_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6) * 3
    ids = torch.tensor([[1, 4, 2, 5], [3, 0, 9, 9]])  # row 2 has two pad positions (ids out of range on purpose)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    clm, adapt, count = 0.0, 0.0, 0
    for b in range(2):
        for t in range(3):
            if mask[b, t + 1]:
                target = int(ids[b, t + 1])
                clm -= float(F.log_softmax(logits[b, t], dim=-1)[target])
                adapt -= float(F.log_softmax(torch.log1p(torch.relu(logits[b, t])), dim=-1)[target])
                count += 1
    assert count == 4
    expected = (clm + 0.5 * adapt) / count
    got = adaptation_loss(logits, ids, mask, lambda_relu=0.5)
    assert got.shape == () and abs(float(got) - expected) < 1e-5
    assert abs(float(adaptation_loss(logits, ids, mask)) - (clm + adapt) / count) < 1e-5
    # pad targets are ignored: their ids, and the logits predicting them, do not matter
    other_logits = logits.clone()
    other_logits[1, 1:] = 100.0
    other_ids = ids.clone()
    other_ids[1, 2:] = 0
    torch.testing.assert_close(adaptation_loss(other_logits, other_ids, mask, 0.5), got)


def test_adaptation_loss_has_gradients_through_both_terms() -> None:
    logits = torch.randn(1, 5, 7, requires_grad=True)
    ids = torch.tensor([[0, 1, 2, 3, 4]])
    adaptation_loss(logits, ids, torch.ones_like(ids)).backward()
    assert logits.grad is not None and logits.grad[0, :4].abs().sum() > 0
    assert torch.all(logits.grad[0, 4] == 0)  # the last position predicts nothing
