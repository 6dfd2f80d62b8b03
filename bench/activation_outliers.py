"""Why onnxruntime's dynamic int8 breaks a model: what its activations look like to a per-tensor int8 quantiser.

    .venv/bin/python bench/activation_outliers.py --model csplade-mini    # a minute on 2 cores
    .venv/bin/python bench/activation_outliers.py --model milco-mini      # the same for a model int8 serves well

onnxruntime's ``quantize_dynamic`` (``--quantize int8``) quantises each MatMul's input per tensor, per batch: one
scale, ``max|x| / 127`` (uint8: ``/ 255`` over the range), for every value. An activation with a few huge outlier
channels (as causal LMs have) gets a step so coarse that most of its values round to zero. For every
``nn.Linear`` of the model this records, over the same texts, ``max|x|``, the median ``|x|``, their ratio, and the
share of values whose magnitude is below half a step (what a per-tensor int8 quantiser rounds to zero); the
report is ``reports/bench/activation-outliers-<model>.json`` (docs/csplade.md reads it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import help_pages, log, machine, paragraph_corpus, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="csplade-mini")
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from milco_os.loading import load_encoder
    from milco_os.settings import get_settings

    cache_dir = args.cache_dir or get_settings().cache_dir
    encoder = load_encoder(args.model, cache_dir)
    pages = help_pages(cache_dir, ["en-us"])
    texts = [d.text for d in paragraph_corpus(pages, args.texts)]
    seen: dict[str, list[np.ndarray]] = {}

    def hook(name: str) -> Any:
        def record(_module: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0].detach().float().abs().reshape(-1).numpy()
            seen.setdefault(name, []).append(x[x > 0] if (x > 0).any() else x)
        return record

    model = encoder.model  # type: ignore[attr-defined]
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        encoder.encode_documents(texts)
    for h in handles:
        h.remove()
    layers = []
    for name, parts in seen.items():
        x = np.concatenate(parts)
        step = float(x.max()) / 127  # symmetric per-tensor int8; uint8 over [min, max] is no finer here
        layers.append({"linear": name, "max_abs": round(float(x.max()), 3), "median_abs": round(float(np.median(x)), 5),
                       "max_over_median": round(float(x.max() / max(np.median(x), 1e-12)), 1),
                       "share_rounded_to_zero": round(float((x < step / 2).mean()), 4)})
    worst = max(layers, key=lambda r: r["share_rounded_to_zero"])
    summary = {"linears": len(layers),
               "median_max_over_median": float(np.median([r["max_over_median"] for r in layers])),
               "median_share_rounded_to_zero": float(np.median([r["share_rounded_to_zero"] for r in layers])),
               "worst": worst}
    log(f"{args.model}: {len(layers)} linear layers; median max/median {summary['median_max_over_median']:.0f}; "
        f"median share a per-tensor int8 step rounds to zero {summary['median_share_rounded_to_zero']:.1%}; "
        f"worst {worst['linear']} {worst['share_rounded_to_zero']:.1%}")
    write_json(f"activation-outliers-{args.model}", {"machine": machine(), "model": encoder.info.name,
                                                      "texts": len(texts), "summary": summary, "layers": layers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
