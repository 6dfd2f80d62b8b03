"""Reproduce a shipped milco-mini version from its committed config and cached inputs, and check it (issue 30).

    .venv/bin/python bench/reproduce_milco.py configs/train/sct-splade-mid-4x.toml --version 2

1. The config must be the one the version's manifest records (``training.sct``; only ``output`` may differ).
2. SCT trains it again into ``--into`` (default ``results/reproduce/milco-mini-<version>``) from the same
   start (``init``: a committed delta) on the same batches. The inputs the original run cached (backbone states,
   grounding targets: ``states-*.pt``, ``ground-*.pt`` in its ``output``) are linked in when that directory is
   here, which saves their computation; they are recomputed otherwise, to the same values. A run cut short
   continues where it stopped when the same command runs again.
3. The delta of the step the version shipped (``step-N/``) is compared with the shipped one: every gate, and
   nDCG@10 at α 0.5 and pivot-only on the four title and keyword sets of ``--split`` (the test figures by
   default, scored in memory as ``bench/milco_dev.py`` does). Each must agree within ``--tolerance`` (0.01).

Writes ``reports/milco/reproduce-milco-mini-<version>.json`` and exits 1 when anything differs by more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Cached inputs of an SCT run that are worth reusing (minutes to hours each on 2 cores).
CACHED_INPUTS = ("states-*.pt", "ground-*.pt")


def config_differences(config: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The fields (``output`` aside) where a committed config and the manifest's record of it disagree."""
    keys = sorted((set(config) | set(recorded)) - {"output"})
    return [f"{k}: config {config.get(k)!r}, shipped {recorded.get(k)!r}" for k in keys
            if config.get(k) != recorded.get(k)]


def differences(shipped: dict[str, float], reproduced: dict[str, float], tolerance: float) -> list[str]:
    """Each number of ``shipped`` that ``reproduced`` misses or misses by more than ``tolerance``."""
    found = []
    for key, value in shipped.items():
        other = reproduced.get(key)
        if other is None:
            found.append(f"{key}: shipped {value}, not reproduced")
        elif abs(other - value) > tolerance:
            found.append(f"{key}: shipped {value:.4f}, reproduced {other:.4f} (|difference| > {tolerance})")
    return found


def numeric_gates(manifest: dict[str, Any]) -> dict[str, float]:
    gates = (manifest.get("gates") or {}).get("sct") or {}
    return {f"gate {k}": float(v) for k, v in gates.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def link_cached_inputs(source: Path, target: Path) -> list[str]:
    """Hard-link (or copy) the original run's cached inputs into ``target``; the names linked."""
    target.mkdir(parents=True, exist_ok=True)
    linked = []
    for pattern in CACHED_INPUTS:
        for path in sorted(source.glob(pattern)):
            if not (target / path.name).exists():
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
                linked.append(path.name)
    return linked


def figures(delta: Path, split: str, cache_dir: Path) -> dict[str, float]:
    """nDCG@10 per set at α 0.5 and pivot-only, as ``bench/milco_dev.py`` scores them."""
    import milco_dev

    from milco_os.loading import load_dir
    from milco_os.models.sources import milco_mini

    encoder = load_dir(milco_mini.build_model(cache_dir, delta))
    data = milco_dev.load_data(encoder, cache_dir, split, f"milco-dev-{delta.parent.name}-{delta.name}")
    result = milco_dev.measure(data, None, encoder.info)
    return {f"{name} ndcg@10 a={a}": float(s[str(a)]["ndcg@10"])
            for name, s in result["sets"].items() for a in milco_dev.ALPHAS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the committed SCT config of the version")
    parser.add_argument("--version", required=True, help="the shipped milco-mini version (a number)")
    parser.add_argument("--into", type=Path, default=None,
                        help="output of the new run (default: results/reproduce/milco-mini-VERSION)")
    parser.add_argument("--split", choices=("dev", "test"), default="test")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from common import log

    from milco_os.errors import MilcoError
    from milco_os.models.sources import milco_mini
    from milco_os.models.sources.versions import version_dir
    from milco_os.settings import Settings
    from milco_os.training.config import SctConfig, load_config
    from milco_os.training.pipeline import run_sct

    try:
        shipped, version = version_dir(milco_mini.DELTA_ROOT, milco_mini.NAME, args.version)
        manifest = milco_mini.read_manifest(shipped)
        config = load_config(args.config, SctConfig)
    except MilcoError as e:
        raise SystemExit(str(e)) from None
    recorded = (manifest.get("training") or {}).get("sct") or {}
    wrong = config_differences(config.model_dump(mode="json"), recorded)
    if wrong:
        raise SystemExit(f"{args.config}: not the config of {milco_mini.NAME}@{version}: " + "; ".join(wrong))
    into = args.into or ROOT / "results" / "reproduce" / f"milco-mini-{version}"
    linked = link_cached_inputs(Path(recorded["output"]), into)
    log(f"training {args.config} into {into} (cached inputs linked: {', '.join(linked) or 'none'})")
    cache_dir = Settings().cache_dir
    run_sct(config.model_copy(update={"output": into}), cache_dir)
    step = manifest["training"].get("step")
    reproduced = into / f"step-{step}" if step else into
    ours, theirs = numeric_gates(manifest), numeric_gates(milco_mini.read_manifest(reproduced))
    log(f"scoring the {args.split} sets with both deltas")
    ours |= figures(shipped, args.split, cache_dir)
    theirs |= figures(reproduced, args.split, cache_dir)
    problems = differences(ours, theirs, args.tolerance)
    report = {"model": f"{milco_mini.NAME}@{version}", "config": str(args.config), "reproduced": str(reproduced),
              "split": args.split, "tolerance": args.tolerance, "shipped": ours, "reproduced_figures": theirs,
              "largest_difference": max(abs(theirs.get(k, float("inf")) - v) for k, v in ours.items()),
              "agree": not problems}
    out = ROOT / "reports" / "milco" / f"reproduce-milco-mini-{version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for line in problems:
        log(f"differs: {line}")
    log(f"{'reproduced' if not problems else 'NOT reproduced'} within {args.tolerance}: largest difference "
        f"{report['largest_difference']:.4f}; wrote {out}")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
