"""Tokenizers without transformers, where that is provably the same tokenizer.

transformers needs seconds to import and to build a tokenizer class (it re-creates the Rust backend from
``tokenizer.json`` through the class's own ``__init__``). What runs in the end is a ``tokenizers.Tokenizer``;
:class:`FastTokenizer` runs that same backend directly, with the attributes the encoders read
(``pad_token_id``, ``all_special_ids`` ...).

"The same" is checked, not assumed: the first time a directory is loaded, transformers' tokenizer is built
and its backend's serialisation compared with ``tokenizer.json`` (padding and truncation aside, which
transformers switches off per call anyway). The verdict, with the special-token attributes, is remembered
in ``.milco_os_tokenizer.json`` next to the files (keyed by their size/mtime/ctime/inode and by the
transformers and tokenizers versions); later loads use the fast path only where the verdict says the two
are identical. Where the file cannot be written, or the tokenizers differ, transformers' tokenizer is used.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from milco_os.errors import ModelError
from milco_os.models.files import file_signature, quiet_transformers
from milco_os.paths import write_text_atomic

log = logging.getLogger(__name__)

VERDICT_FILE = ".milco_os_tokenizer.json"
VERDICT_FORMAT = 2
#: Files of a saved tokenizer; those present are part of the verdict's key.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
#: Texts both tokenizers must encode alike before the fast one is trusted (with and without special tokens).
PROBE_TEXTS = [
    "", " ", "Hello, World! Don't stop.", "  leading and trailing  ", "Tabs\tand\nnew lines",
    "Übergrößenträger straße café naïve", "Как добавить таблицу?", "表を挿入する方法", "كيف أضيف جدولا",
    "ﬁ ½ Ⅻ ＡＢＣ ①", "emoji 🙂 and 中文 mixed", "u.s.a. e-mail 3.14 $5 #tag @user", "<s> </s> [CLS] [SEP] <mask>",
]
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("transformers", "tokenizers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def _key(directory: Path) -> dict[str, Any]:
    files = [f for f in TOKENIZER_FILES if (directory / f).is_file()]
    return {
        "format": VERDICT_FORMAT,
        "files": [list(s) for s in file_signature(directory, files)],
        "versions": dict(_versions()),
    }


def _canonical(serialised: str) -> dict[str, Any]:
    data = json.loads(serialised)
    data.pop("truncation", None)
    data.pop("padding", None)
    return data


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` with the slice of transformers' tokenizer API milco-os uses: calling it on
    a text or a list of texts (``add_special_tokens``, ``return_offsets_mapping``; no padding, no truncation),
    ``pad_token_id``, ``all_special_ids``, ``get_vocab``, ``len``, ``convert_ids_to_tokens`` and
    ``save_pretrained`` (which copies the source files). Anything else is answered by transformers' own
    tokenizer, built on first use."""

    def __init__(self, backend: Any, directory: Path, attributes: dict[str, Any]) -> None:
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = bool(attributes.get("split_special_tokens", False))
        self._backend = backend
        self._directory = Path(directory)
        self._attributes = dict(attributes)
        self._hf: Any = None
        self._hf_lock = threading.Lock()
        for name in SPECIAL_ATTRIBUTES:
            setattr(self, name, attributes.get(name))
            setattr(self, f"{name}_id", attributes.get(f"{name}_id"))
        self.all_special_ids: list[int] = list(attributes.get("all_special_ids", []))
        self.model_max_length: int = attributes.get("model_max_length", int(1e30))
        self.padding_side: str = attributes.get("padding_side", "right")
        self.name_or_path = str(directory)

    @property
    def backend_tokenizer(self) -> Any:
        return self._backend

    def __call__(
        self,
        text: str | list[str],
        add_special_tokens: bool = True,
        return_attention_mask: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        offsets = bool(kwargs.pop("return_offsets_mapping", False))
        if kwargs:  # padding, truncation, tensors ...: transformers' own implementation
            return self._transformers()(text, add_special_tokens=add_special_tokens,
                                        return_attention_mask=return_attention_mask,
                                        return_offsets_mapping=offsets, **kwargs)
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        encodings = self._backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        ids = [e.ids for e in encodings]
        out: dict[str, Any] = {"input_ids": ids if batched else ids[0]}
        if return_attention_mask is not False:
            masks = [e.attention_mask for e in encodings]
            out["attention_mask"] = masks if batched else masks[0]
        if offsets:  # (start, end) character offsets of each token in its text
            spans = [e.offsets for e in encodings]
            out["offset_mapping"] = spans if batched else spans[0]
        return out

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        # id_to_token over the ids is several times faster than the backend's get_vocab for 250k pieces.
        backend = self._backend
        vocab = {}
        for i in range(len(self)):
            token = backend.id_to_token(i)
            if token is not None:
                vocab[token] = i
        if len(vocab) != len(self):  # ids beyond the size (added tokens out of order): the exact way
            return backend.get_vocab(with_added_tokens=True)
        return vocab

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> Any:
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in ids if i not in special]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> Any:
        if isinstance(tokens, str):
            return self._backend.token_to_id(tokens)
        return [self._backend.token_to_id(t) for t in tokens]

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """Copy the tokenizer files this tokenizer was loaded from (they describe it exactly)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in TOKENIZER_FILES:
            if (self._directory / name).is_file():
                shutil.copyfile(self._directory / name, out / name)
                written.append(str(out / name))
        return tuple(written)

    def _transformers(self) -> Any:
        with self._hf_lock:
            if self._hf is None:
                self._hf = _load_transformers(self._directory)
            return self._hf

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._transformers(), name)


def _load_transformers(directory: Path) -> Any:
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as e:
        msg = f"{directory}: cannot load the tokenizer: {e}"
        raise ModelError(msg) from e


def _attributes(hf: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SPECIAL_ATTRIBUTES:
        value = getattr(hf, name, None)
        out[name] = None if value is None else str(value)
        out[f"{name}_id"] = getattr(hf, f"{name}_id", None)
    out["all_special_ids"] = [int(i) for i in hf.all_special_ids]
    out["model_max_length"] = int(min(hf.model_max_length, 1 << 62))
    out["padding_side"] = getattr(hf, "padding_side", "right")
    out["split_special_tokens"] = bool(getattr(hf, "split_special_tokens", False))
    return out


def _read_verdict(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / VERDICT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_verdict(directory: Path, verdict: dict[str, Any]) -> None:
    path = directory / VERDICT_FILE
    try:
        write_text_atomic(path, json.dumps(verdict, indent=1) + "\n")
    except OSError as e:
        log.debug("%s: not written (%s)", path, e)


def check_tokenizer(directory: Path, hf: Any | None = None) -> dict[str, Any]:
    """Compare transformers' tokenizer for ``directory`` (``hf``, built here when None) with its
    ``tokenizer.json`` and remember the verdict (see the module docstring); returns it."""
    import tokenizers

    directory = Path(directory)
    key = _key(directory)
    hf = hf if hf is not None else _load_transformers(directory)
    backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
    same = False
    if backend is not None and (directory / "tokenizer.json").is_file():
        raw = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        same = _canonical(backend.to_str()) == _canonical(raw.to_str())
        if same:  # and no Python-side preprocessing in transformers' class either
            fast = FastTokenizer(raw, directory, _attributes(hf))
            same = all(
                fast(PROBE_TEXTS, add_special_tokens=add)["input_ids"]
                == hf(PROBE_TEXTS, add_special_tokens=add)["input_ids"]
                for add in (True, False)
            )
    verdict = {**key, "identical": same, "attributes": _attributes(hf)}
    _write_verdict(directory, verdict)
    return verdict


def _fast_verdict(directory: Path) -> dict[str, Any] | None:
    """The remembered verdict for ``directory`` when it is current and says "identical", else None."""
    verdict = _read_verdict(directory)
    if verdict is None or verdict.get("identical") is not True or not isinstance(verdict.get("attributes"), dict):
        return None
    try:
        current = _key(directory)
    except OSError:
        return None
    return verdict if all(verdict.get(k) == v for k, v in current.items()) else None


def _read_backend(directory: Path) -> Any:
    """The parsed ``tokenizer.json`` of ``directory``, shared by every load of the same files in this process."""
    import tokenizers

    key = (str(directory.resolve()), json.dumps(_key(directory)))
    with _backends_lock:
        if key in _backends:
            _backends.move_to_end(key)
            return _backends[key]
    try:
        backend = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as e:  # tokenizers raises plain Exception for a broken file
        msg = f"{directory / 'tokenizer.json'}: cannot load the tokenizer: {e}"
        raise ModelError(msg) from e
    with _backends_lock:
        _backends[key] = backend
        while len(_backends) > MAX_SHARED_BACKENDS:
            _backends.popitem(last=False)
    return backend


#: Parsed tokenizers kept for reuse (a service reloading its model, tests) and for the exit below.
MAX_SHARED_BACKENDS = 8
_backends: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
_backends_lock = threading.Lock()


@atexit.register
def _keep_backends_at_exit() -> None:
    """Freeing a 250k-piece Unigram model takes about half a second, spent at every interpreter exit for
    memory the operating system reclaims anyway: the shared tokenizers are deliberately not freed."""
    import ctypes

    for backend in list(_backends.values()):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(backend))


_pending: dict[str, Future[Any]] = {}
_pending_lock = threading.Lock()


def prefetch(directory: Path) -> None:
    """Start reading the fast tokenizer of ``directory`` in a background thread, where one applies.

    Parsing a 250k-piece ``tokenizer.json`` takes about a second in Rust, which releases the GIL: started
    before torch is imported, it runs alongside that import. :func:`load_tokenizer` picks the result up."""
    directory = Path(directory)
    if _fast_verdict(directory) is None:
        return
    key = str(directory.resolve())
    future: Future[Any] = Future()
    with _pending_lock:
        if key in _pending:
            return
        _pending[key] = future

    def run() -> None:
        try:
            future.set_result(_read_backend(directory))
        except BaseException as e:  # handed to the caller of load_tokenizer
            future.set_exception(e)

    threading.Thread(target=run, name=f"milco-os-tokenizer-{directory.name}", daemon=True).start()


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory``: a :class:`FastTokenizer` where a remembered verdict says it is
    identical to transformers' tokenizer, else transformers' own (and the verdict is recorded for next time)."""
    directory = Path(directory)
    with _pending_lock:
        future = _pending.pop(str(directory.resolve()), None)
    verdict = _fast_verdict(directory)
    if verdict is not None:
        backend = future.result() if future is not None else _read_backend(directory)
        return FastTokenizer(backend, directory, verdict["attributes"])
    hf = _load_transformers(directory)
    try:
        check_tokenizer(directory, hf)
    except Exception as e:  # a failed check only costs the fast path next time
        log.debug("%s: tokenizer check failed (%s)", directory, e)
    return hf
