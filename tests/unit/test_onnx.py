"""ONNX export and the onnxruntime encoder: parity with torch on the real splade-tiny (fp32, int8, fp16),
dynamic axes on tiny random BERT / MILCO / Llama-style models, the exported directory's layout and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from milco_os.errors import ModelError
from milco_os.models.splade import SpladeMLM
from milco_os.runtime.encoder import load_model_info
from milco_os.runtime.export import MANIFEST_FILE, export_onnx
from milco_os.runtime.onnx_runtime import OnnxEncoder, load_onnx_dir
from milco_os.runtime.torch_runtime import TorchEncoder
from milco_os.types import ModelInfo, SparseVector, pad_vocab, vocab_from_tokenizer
from tests.unit.tiny_models import english_tokenizer, multilingual_tokenizer

DATA = Path(__file__).resolve().parents[2] / "milco_os" / "data"
QUERIES = ["what causes a heart attack", "solar panel", "how to brew green tea at home", "volcano"]


def demo_texts() -> list[str]:
    docs = [json.loads(line) for line in (DATA / "demo_documents.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = [q["text"] for q in json.loads((DATA / "demo_queries.json").read_text(encoding="utf-8"))]
    return [d["text"] for d in docs] + [d["title"] for d in docs] + queries


def english_docs() -> list[str]:
    docs = [json.loads(line) for line in (DATA / "demo_documents.jsonl").read_text(encoding="utf-8").splitlines()]
    return [d["text"] for d in docs if d["lang"] == "en"]


@pytest.fixture(scope="module")
def exported(splade_tiny: TorchEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory with all three variants (each export keeps the variants exported before it)."""
    out = tmp_path_factory.mktemp("splade-tiny-onnx")
    assert export_onnx(splade_tiny, out) == out / "model.onnx"
    assert export_onnx(splade_tiny, out, quantize="fp16") == out / "model.fp16.onnx"
    assert export_onnx(splade_tiny, out, quantize="int8") == out / "model.int8.onnx"
    return out


@pytest.fixture(scope="module")
def reference(splade_tiny: TorchEncoder) -> tuple[list[str], list]:
    """Torch's encodings of the demo data and the parity texts, computed once for the variant tests."""
    texts = demo_texts() + parity_texts()
    return texts, splade_tiny.encode_documents(texts)


def top(vec: SparseVector, k: int) -> list[int]:
    return vec.sorted().ids[:k].tolist()


def overlap(ref: SparseVector, got: SparseVector, k: int = 10) -> float:
    """Share of the reference's top-k terms that are also in the other top-k (1.0 for two empty vectors)."""
    want = set(top(ref, k))
    return len(want & set(top(got, k))) / len(want) if want else float(len(got) == 0)


def assert_same_top(ref: SparseVector, got: SparseVector, k: int = 20, atol: float = 1e-3) -> None:
    """Same top-k terms with weights within ``atol``; a swap at the k-th place is tolerated only for a tie."""
    want, have = top(ref, k), top(got, k)
    ref_w = dict(zip(ref.ids.tolist(), ref.weights.tolist(), strict=True))
    got_w = dict(zip(got.ids.tolist(), got.weights.tolist(), strict=True))
    for i in want:
        assert abs(ref_w[i] - got_w.get(i, 0.0)) <= atol, (i, ref_w[i], got_w.get(i))
    if set(want) != set(have):
        kth = ref.sorted().weights[k - 1]
        assert all(abs(ref_w[i] - kth) <= atol for i in set(want) ^ set(have) if i in ref_w)


def parity_texts() -> list[str]:
    docs = english_docs()
    document = " ".join(docs)  # ~200 tokens
    long_text = " ".join(docs * 3)  # > 256 tokens: windowed
    return [*QUERIES, document, long_text, "", "heart", document[:300]]


def test_fp32_matches_torch_on_queries_documents_windows_and_empty_text(
    splade_tiny: TorchEncoder, exported: Path
) -> None:
    texts = parity_texts()
    lengths = [len(ids) for ids in splade_tiny.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert 150 <= lengths[len(QUERIES)] <= 256 and lengths[len(QUERIES) + 1] > 400  # the intended shapes
    onnx_encoder = load_onnx_dir(exported, quantize="fp32", batch_size=3)  # several batches of different widths
    assert onnx_encoder.provider == "CPUExecutionProvider" or onnx_encoder.provider == "CUDAExecutionProvider"
    for kind in ("encode_queries", "encode_documents"):
        ref = getattr(splade_tiny, kind)(texts)
        got = getattr(onnx_encoder, kind)(texts)
        for r, g in zip(ref, got, strict=True):
            assert len(r.pivot) == len(g.pivot)
            assert_same_top(r.pivot, g.pivot, k=20, atol=1e-3)
            assert len(g.echo) == 0  # SPLADE has no echo view
    assert len(onnx_encoder.encode_documents([""])[0].pivot) == 0


def test_int8_keeps_the_top_terms(reference: tuple[list[str], list], exported: Path) -> None:
    texts, ref = reference
    got = load_onnx_dir(exported, quantize="int8").encode_documents(texts)
    overlaps = [overlap(r.pivot, g.pivot) for r, g in zip(ref, got, strict=True)]
    # Measured on these 79 texts (per-channel QInt8): 0.977 with AVX-512 VNNI, 0.926 on an AVX2-only CPU
    # (onnxruntime's int8 kernels differ by instruction set); a broken quantisation falls far below 0.9.
    assert np.mean(overlaps) >= 0.9, np.mean(overlaps)


def test_fp16_loads_and_keeps_the_top_terms(reference: tuple[list[str], list], exported: Path) -> None:
    texts, ref = reference
    got = load_onnx_dir(exported, quantize="fp16").encode_documents(texts)
    assert got[0].pivot.weights.dtype == np.float32
    overlaps = [overlap(r.pivot, g.pivot) for r, g in zip(ref, got, strict=True)]
    assert np.mean(overlaps) >= 0.98, np.mean(overlaps)  # measured 1.0 (weights within 5e-3)


def test_exported_dir_is_self_describing(splade_tiny: TorchEncoder, exported: Path) -> None:
    info = load_model_info(exported)
    assert info.fingerprint == splade_tiny.info.fingerprint
    assert info.pivot_vocab.fingerprint == splade_tiny.info.pivot_vocab.fingerprint
    assert info.echo_vocab is None
    assert (info.name, info.family) == (splade_tiny.info.name, "splade")
    assert (info.max_query_length, info.max_document_length) == (64, 256)
    assert info.details["runtime"] == "onnx"
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["default"] == "int8" and set(manifest["variants"]) == {"fp32", "int8", "fp16"}
    assert manifest["fingerprint"] == splade_tiny.info.fingerprint
    # Without quantize the directory's default (the last exported variant) is loaded.
    default = load_onnx_dir(exported)
    assert default.model_path.name == "model.int8.onnx" and default.info.details["quantize"] == "int8"
    assert default.info.fingerprint == splade_tiny.info.fingerprint


def test_missing_files_and_bad_variants_are_named(exported: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx: missing"):
        load_onnx_dir(broken, quantize="fp32")
    (broken / "model.fp16.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.fp16\.onnx: missing.*has int8"):
        load_onnx_dir(broken, quantize="fp16")
    with pytest.raises(ModelError, match="quantize 'int4'"):
        load_onnx_dir(exported, quantize="int4")
    (broken / "milco_os_vocabs.json").unlink()
    with pytest.raises(ModelError, match="milco_os_vocabs.json"):
        load_onnx_dir(broken, quantize="int8")
    with pytest.raises(ModelError, match="not a directory"):
        load_onnx_dir(tmp_path / "nowhere")


def test_re_export_of_another_model_drops_stale_variants(exported: Path, tmp_path: Path) -> None:
    from tests.unit.tiny_models import save_tiny_bert_mlm

    out = tmp_path / "reused"
    shutil.copytree(exported, out)
    model, tokenizer = save_tiny_bert_mlm(tmp_path / "bert")
    export_onnx(tiny_encoder(SpladeMLM(model), tokenizer), out)
    assert not (out / "model.int8.onnx").exists() and not (out / "model.fp16.onnx").exists()
    assert json.loads((out / MANIFEST_FILE).read_text())["default"] == "fp32"


def test_cpu_is_used_when_cuda_cannot_start(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    import milco_os.runtime.onnx_runtime as onnx_runtime

    assert load_onnx_dir(exported, quantize="int8", device="cpu").provider == "CPUExecutionProvider"
    # onnxruntime-gpu lists CUDA even without the CUDA libraries: the session then falls back to CPU.
    monkeypatch.setattr(onnx_runtime, "_cuda_device_present", lambda: True)
    assert load_onnx_dir(exported, quantize="int8", intra_op_num_threads=1).provider == "CPUExecutionProvider"
    with pytest.raises(ModelError, match="could not create a CUDA session"):
        load_onnx_dir(exported, quantize="int8", device="cuda")


def test_onnx_is_not_imported_with_milco_os() -> None:
    code = (
        "import sys, milco_os, milco_os.loading, milco_os.runtime.export, milco_os.runtime.onnx_runtime\n"
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules, 'imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ tiny random models: dynamic axes
def tiny_encoder(module: torch.nn.Module, tokenizer, echo_tokenizer=None) -> TorchEncoder:  # noqa: ANN001
    vocab_size = module.mlm.config.vocab_size if hasattr(module, "mlm") else len(tokenizer)
    pivot = pad_vocab(vocab_from_tokenizer(tokenizer, "tiny-pivot"), vocab_size)
    echo = vocab_from_tokenizer(echo_tokenizer, "tiny-echo") if echo_tokenizer is not None else None
    info = ModelInfo(name="tiny", family="milco" if echo else "splade", fingerprint="sha256:tiny",
                     pivot_vocab=pivot, echo_vocab=echo, max_query_length=24, max_document_length=48)
    return TorchEncoder(info, echo_tokenizer or tokenizer, module.eval(), device="cpu")


def run_both(module: torch.nn.Module, session_path: Path, vocab: int, pad_id: int) -> None:
    """Shapes other than the export example's (batch 2, ~12 tokens), padded rows included."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, length in [(1, 1), (5, 23), (3, 40), (7, 4)]:
        ids = rng.integers(3, vocab, (batch, length)).astype(np.int64)
        mask = np.ones_like(ids)
        if length > 2:
            mask[0, length // 2:] = 0
            ids[0, length // 2:] = pad_id
        pivot, echo = session.run(["pivot", "echo"], {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            t_pivot, t_echo = module(torch.from_numpy(ids), torch.from_numpy(mask))
        assert pivot.shape == (batch, t_pivot.shape[1]) and echo.shape == (batch, length)
        np.testing.assert_allclose(pivot, t_pivot.numpy(), atol=1e-5)
        np.testing.assert_allclose(echo, t_echo.numpy(), atol=1e-5)


def test_tiny_bert_splade_has_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    from tests.unit.tiny_models import save_tiny_bert_mlm

    model, tokenizer = save_tiny_bert_mlm(tmp_path / "bert")
    module = SpladeMLM(model).eval()
    path = export_onnx(tiny_encoder(module, tokenizer), tmp_path / "onnx")
    run_both(module, path, len(tokenizer), tokenizer.pad_token_id)
    texts = ["the heart attack", "green tea and hot water " * 20, "", "sun"]
    ref = tiny_encoder(module, tokenizer).encode_documents(texts)
    got = load_onnx_dir(tmp_path / "onnx", batch_size=2).encode_documents(texts)
    for r, g in zip(ref, got, strict=True):
        assert_same_top(r.pivot, g.pivot, k=20, atol=1e-4)


def test_tiny_milco_exports_its_echo_view(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM, XLMRobertaConfig, XLMRobertaModel

    from milco_os.models.milco import MilcoModule

    en_tok, m_tok = english_tokenizer(), multilingual_tokenizer()
    torch.manual_seed(0)
    m = XLMRobertaModel(XLMRobertaConfig(vocab_size=len(m_tok), hidden_size=24, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=80,
                                         pad_token_id=1)).eval()
    en = BertForMaskedLM(BertConfig(vocab_size=len(en_tok), hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32)).eval()
    module = MilcoModule(m, en.cls, encoder_hidden=24, head_hidden=16, echo_impl="code",
                         special_token_ids=[0, 2], mask_special_tokens=True).eval()
    with torch.no_grad():
        module.echo.bias.fill_(0.5)  # most tokens get a positive echo weight
    encoder = tiny_encoder(module, en_tok, echo_tokenizer=m_tok)
    path = export_onnx(encoder, tmp_path / "onnx")
    run_both(module, path, len(m_tok), m_tok.pad_token_id)
    texts = ["der Hund und Herzinfarkt", "green tea", "Vulkan lava " * 40]
    ref, got = encoder.encode_documents(texts), load_onnx_dir(tmp_path / "onnx").encode_documents(texts)
    for r, g in zip(ref, got, strict=True):
        assert_same_top(r.pivot, g.pivot, k=10, atol=1e-4)
        assert len(r.echo) > 0
        assert_same_top(r.echo, g.echo, k=10, atol=1e-4)


@pytest.mark.parametrize("variant", ["causal", "echo", "bi"])
def test_tiny_llama_style_csplade_exports(variant: str, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from milco_os.models.csplade import CSpladeModule

    tokenizer = english_tokenizer()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, initializer_range=0.1)).eval()
    module = CSpladeModule(llama, variant=variant, chunk_size=3).eval()  # chunks: not unrolled in the graph
    path = export_onnx(tiny_encoder(module, tokenizer), tmp_path / "onnx", opset=18)
    assert json.loads((tmp_path / "onnx" / MANIFEST_FILE).read_text())["opset"] == 18
    run_both(module, path, len(tokenizer), 0)


def test_export_needs_a_torch_encoder(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="needs a torch encoder"):
        export_onnx(load_onnx_dir(exported, quantize="fp32"), tmp_path / "again")


def test_unknown_quantization_is_refused_before_exporting(splade_tiny: TorchEncoder, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="quantize 'int4'"):
        export_onnx(splade_tiny, tmp_path / "x", quantize="int4")
    assert not (tmp_path / "x").exists()


def test_onnx_encoder_refuses_a_foreign_graph(exported: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    info = load_model_info(exported)
    with pytest.raises(ModelError, match="expected input_ids, attention_mask"):
        OnnxEncoder(info, english_tokenizer(), tmp_path / "m.onnx")


# ------------------------------------------------------------------ --runtime onnx: the export cache
def count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def refuse_torch_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import milco_os.loading as loading
    import milco_os.models.milco as milco
    import milco_os.models.splade as splade

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the torch model was loaded")

    for module, name in ((loading, "load_dir"), (splade, "load_splade_dir"), (milco, "load_milco_dir")):
        monkeypatch.setattr(module, name, refuse)


def test_a_cached_export_is_used_without_loading_the_torch_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import milco_os.runtime.onnx_runtime as onnx_runtime
    from milco_os.loading import load_dir, load_encoder, onnx_export_dir
    from milco_os.models import layouts
    from tests.unit.tiny_models import save_tiny_bert_mlm

    model_dir, cache = tmp_path / "mlm", tmp_path / "cache"
    save_tiny_bert_mlm(model_dir)
    torch_encoder = load_dir(model_dir)
    first = load_encoder(str(model_dir), cache, runtime="onnx", batch_size=2)  # exports once
    target = onnx_export_dir(cache, "mlm", layouts.fingerprint(model_dir), None)
    assert (target / ".complete").is_file() and first.model_path.parent == target
    assert first.info.fingerprint == torch_encoder.info.fingerprint == layouts.fingerprint(model_dir)

    with monkeypatch.context() as m:
        refuse_torch_loading(m)
        onnx_loads = count_calls(m, onnx_runtime, "load_onnx_dir")
        again = load_encoder(str(model_dir), cache, runtime="onnx", batch_size=2)
        assert len(onnx_loads) == 1 and again.model_path == first.model_path
        texts = ["the heart attack", "green tea and hot water " * 8, ""]  # < 64 positions
        for a, b in zip(first.encode_documents(texts), again.encode_documents(texts), strict=True):
            assert a.pivot.to_terms() == b.pivot.to_terms()
        # an exported directory with --quantize: loaded once, never through torch
        onnx_loads.clear()
        chosen = load_encoder(str(target), cache, runtime="onnx", quantize="fp32")
        assert len(onnx_loads) == 1 and chosen.info.details["quantize"] == "fp32"
        # a variant that was never exported needs the torch model
        with pytest.raises(AssertionError, match="torch model was loaded"):
            load_encoder(str(model_dir), cache, runtime="onnx", quantize="int8")
    int8 = load_encoder(str(model_dir), cache, runtime="onnx", quantize="int8")
    assert int8.model_path.name == "model.int8.onnx"
    assert int8.model_path.parent == onnx_export_dir(cache, "mlm", torch_encoder.info.fingerprint, "int8")
    with pytest.raises(ModelError, match="quantize 'int4'"):
        load_encoder(str(model_dir), cache, runtime="onnx", quantize="int4")


def test_the_onnx_runtime_needs_no_torch_for_a_cached_export(tmp_path: Path) -> None:
    from milco_os.loading import load_encoder
    from tests.unit.tiny_models import save_tiny_bert_mlm

    model_dir, cache = tmp_path / "mlm", tmp_path / "cache"
    save_tiny_bert_mlm(model_dir)
    load_encoder(str(model_dir), cache, runtime="onnx")
    load_encoder(str(model_dir), cache, runtime="onnx")  # records the tokenizer check for the fast path
    code = (
        "import sys\n"
        "from milco_os.loading import load_encoder\n"
        f"enc = load_encoder({str(model_dir)!r}, {str(cache)!r}, runtime='onnx', device='cpu')\n"
        "assert len(enc.encode_queries(['heart attack'])[0].pivot) > 0\n"
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_fast_path_milco_exports_with_dynamic_axes(tmp_path: Path) -> None:
    from milco_os.loading import load_dir
    from milco_os.models import bert
    from tests.unit.tiny_models import save_tiny_bert_milco

    ckpt = save_tiny_bert_milco(tmp_path)
    load_dir(ckpt)
    encoder = load_dir(ckpt)
    assert isinstance(encoder.model.m_model, bert.BertModel)
    path = export_onnx(encoder, tmp_path / "onnx")
    run_both(encoder.model, path, len(encoder.tokenizer), encoder.tokenizer.pad_token_id)
    texts = ["der Hund und Herzinfarkt", "green tea", "Vulkan lava " * 40, ""]
    got = load_onnx_dir(tmp_path / "onnx").encode_documents(texts)
    for r, g in zip(encoder.encode_documents(texts), got, strict=True):
        assert_same_top(r.pivot, g.pivot, k=10, atol=1e-4)
        assert_same_top(r.echo, g.echo, k=10, atol=1e-4)


def test_the_dense_view_is_exported_beside_the_sparse_ones(tmp_path: Path) -> None:
    from milco_os.loading import load_dir
    from tests.unit.tiny_models import save_tiny_bert_milco

    encoder = load_dir(save_tiny_bert_milco(tmp_path, changed_top_layers=1))
    assert encoder.info.dense is not None
    export_onnx(encoder, tmp_path / "onnx")
    onnx_encoder = load_onnx_dir(tmp_path / "onnx")
    assert onnx_encoder.info.dense == encoder.info.dense  # the index check compares this fingerprint
    texts = ["der Hund und Herzinfarkt", "green tea", "Vulkan lava " * 40, ""]
    for r, g in zip(encoder.encode_documents(texts, dense=True), onnx_encoder.encode_documents(texts, dense=True),
                    strict=True):
        assert (r.dense is None) == (g.dense is None)
        if r.dense is not None:
            np.testing.assert_allclose(g.dense, r.dense, atol=1e-5)
        assert_same_top(r.pivot, g.pivot, k=10, atol=1e-4)
    # The dense view is a graph of its own: a sparse-only encoder never loads it (onnxruntime would run a whole
    # graph whatever outputs are asked for).
    assert (tmp_path / "onnx" / "dense.onnx").is_file()
    sparse_only = load_onnx_dir(tmp_path / "onnx")
    sparse_only.encode_documents(texts)
    assert sparse_only.dense_session is None
    plain = onnx_encoder.encode_documents(texts[:1])[0]
    with_dense = onnx_encoder.encode_documents(texts[:1], dense=True)[0]
    assert plain.dense is None and plain.pivot.to_terms() == with_dense.pivot.to_terms()


def test_int8_is_refused_for_the_families_it_ruins() -> None:
    from milco_os.errors import ModelError
    from milco_os.runtime.export import check_quantization

    with pytest.raises(ModelError, match="int8 is refused for csplade models: .*outlier"):
        check_quantization("csplade", "int8")
    check_quantization("csplade", "fp16")
    check_quantization("milco", "int8")
