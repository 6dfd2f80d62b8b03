"""``milco-os encode`` and ``export-onnx``, and how every command gets its model: ``--runtime``/``--quantize``,
a bare built-in name following an index to the version that built it, or Ray actors loading it instead."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from milco_os.cli_support import (
    checked,
    err,
    handle_errors,
    out,
    read_stdin_lines,
    with_settings,
)
from milco_os.errors import ConfigError

RuntimeOpt = Annotated[str, typer.Option("--runtime", help="torch, or onnx (exported once into the cache).")]
QuantizeOpt = Annotated[str | None, typer.Option("--quantize", help="With --runtime onnx: int8 or fp16 instead of fp32.")]


def load_model(settings: Any, **kwargs: Any) -> Any:
    from milco_os.loading import load_encoder

    with err.status(f"loading model {settings.model} ..."):
        return load_encoder(settings.model, settings.cache_dir, **kwargs)


def following_index(settings: Any, client: Any, index: str, record: dict[str, Any] | None = None) -> Any:
    """``settings`` with the model to encode for INDEX (its ``record``, read here when not given): a bare built-in
    name (the default milco-mini) follows the index to the shipped version that built it, and says so on stderr.
    A missing or foreign index leaves them as they are (the command reports it where it reads the index)."""
    from milco_os.errors import IndexNotFound, ModelMismatch
    from milco_os.loading import model_for_index, pinned
    from milco_os.opensearch.indices import index_record

    try:
        built_with = (record or index_record(client, index)).get("model", {}).get("name")
    except (IndexNotFound, ModelMismatch):
        return settings
    chosen = model_for_index(settings.model, built_with)
    if chosen == settings.model or chosen == (newest := pinned(settings.model)):
        return settings
    err.print(f"index {index!r} was built with {chosen}: encoding with it ({settings.model} is now {newest}; "
              f"`milco-os upgrade {index}` re-encodes the index with it)", highlight=False, markup=False)
    return settings.model_copy(update={"model": chosen})


def ray_job(ray_options: Any, settings: Any, runtime: str, quantize: str | None) -> tuple[Any, Any]:
    """(the Ray job, None) with --ray: the actors load the model; else (None, the model loaded here)."""
    if ray_options is None:
        return None, load_model(settings, runtime=runtime, quantize=quantize)
    from milco_os.opensearch.ray_pool import RayJob

    return RayJob(ray_options, settings, runtime, quantize), None


@handle_errors
@with_settings(model=True)
def encode(
    texts: Annotated[list[str], typer.Argument(help="Texts to encode; '-' reads one text per line from stdin.")],
    kind: Annotated[str, typer.Option("--kind", help="query or document (sets the max length).")] = "document",
    runtime: RuntimeOpt = "torch",
    quantize: QuantizeOpt = None,
    doc_prune: Annotated[str, typer.Option("--doc-prune", help="With --kind document: pruning PIVOT[,ECHO].")] = "none",
    query_prune: Annotated[str, typer.Option("--query-prune", help="With --kind query: pruning PIVOT[,ECHO].")] = "none",
    index_keys: Annotated[bool, typer.Option(
        "--index-keys", help="Print terms as the index stores them ('.' escaped as %2E) instead of as the "
                             "vocabulary spells them.")] = False,
    settings: Any = None,
) -> None:
    """Print one JSON object per text: {"pivot": {term: weight}, "echo": {piece: weight}}, largest first.

    Terms are display keys (vocabulary entries as people read them: a byte-level entry decoded, ``Ġtable`` as
    ``table`` and a piece inside a word as ``##table``; weights to 4 digits). To send vectors to OpenSearch yourself,
    use --index-keys, and weight the views as search does (alpha, 1 - alpha): `milco-os search --print-query
    neural_sparse` prints the whole query."""
    from milco_os.keys import encode_key
    from milco_os.pruning import Pruning

    if kind not in ("query", "document"):
        raise ConfigError(f"--kind {kind!r}: expected query or document")
    option, rule, other, unused = (("--query-prune", query_prune, "--doc-prune", doc_prune) if kind == "query"
                                   else ("--doc-prune", doc_prune, "--query-prune", query_prune))
    if unused != "none":
        raise ConfigError(f"{other}: does not apply to --kind {kind}; use {option}")
    pruning = checked(option, lambda: Pruning.parse(rule))
    if pruning.needs_stats:
        raise ConfigError(f"{option} {rule}: selective pruning needs an index's document frequencies; use search")
    texts = read_stdin_lines() if texts == ["-"] else texts
    encoder = load_model(settings, runtime=runtime, quantize=quantize)
    for result in (encoder.encode_queries if kind == "query" else encoder.encode_documents)(texts):
        pruned = pruning.apply(result)
        record = {view: {encode_key(t) if index_keys else getattr(pruned, view).vocab.readable(t): float(f"{w:.4g}")
                          for t, w in getattr(pruned, view).to_terms().items()}
                  for view in ("pivot", "echo")}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@handle_errors
@with_settings(model=True)
def export_onnx_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the ONNX model into.")],
    quantize: QuantizeOpt = None,
    settings: Any = None,
) -> None:
    """Export a model to ONNX (dynamic batch and sequence axes), optionally quantised to int8 or fp16."""
    from milco_os.runtime.export import export_onnx

    encoder = load_model(settings)
    with err.status("exporting ..."):
        path = export_onnx(encoder, out_dir, quantize=quantize)  # type: ignore[arg-type]
    out.print(str(path), highlight=False)
