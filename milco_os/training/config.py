"""Training configurations, read from TOML files (``configs/train/*.toml``); every field is checked."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from milco_os.errors import ConfigError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    languages: list[str] = Field(..., min_length=1, description="non-English help languages to train on")
    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    output: Path = Field(..., description="directory for the trained delta and the log")
    init: Path | None = Field(None, description="a delta directory to start from (SCT starts from SAP's)")
    threads: int = Field(0, ge=0, description="torch threads; 0 = torch's default")
    train_top_layers: int = Field(0, ge=0, le=12, description="backbone layers trained (from the top); the rest frozen")
    backbone_lr: float | None = Field(None, gt=0, description="learning rate of those layers (default: lr)")
    connector_hidden: int = Field(0, ge=0, description="0: a Linear connector (the paper's); >0: an MLP of this width")
    device: str = Field("cpu", description="torch device for training, e.g. cuda on a GPU machine")
    checkpoint_every: int = Field(200, ge=1, description="steps between resumable checkpoints in the output dir")
    gate_every: int = Field(0, ge=0, description="steps between gate measurements (0: at the end only)")
    gate_languages: list[str] = Field(["de", "fr", "es", "ja", "zh-cn", "ru"], min_length=1,
                                      description="languages of the held-out (dev) gate data")


class SapConfig(_Config):
    """Sparse Alignment Pretraining (spec A3.1): sparse-aware MSE of the student's raw max-pooled logits
    against the English teacher's, on X text and on the English text itself (the code's second term)."""

    stage: Literal["sap"] = "sap"
    max_pairs: int = Field(20_000, ge=1, description="bitext pairs sampled (paragraphs + gettext)")
    gettext_share: float = Field(0.3, ge=0, le=1, description="share of the pairs taken from gettext")
    max_length: int = Field(64, ge=8)
    english_term: bool = True
    token_epochs: int = Field(6, ge=0, description="epochs of token-level alignment before the pooled loss: the "
                                                   "connector and head transform regress the teacher's decoder "
                                                   "inputs on English tokens (0: off)")
    token_batch: int = Field(2048, ge=1, description="tokens per step of that alignment")
    token_weight: float = Field(1.0, ge=0, description="weight of the token-level loss beside the pooled one")
    teacher_vocab_only: bool = Field(True, description="train and emit only the terms the teacher activates on "
                                                       "the training texts")


class SctConfig(_Config):
    """Sparse Contrastive Training (spec A3.2): KL(teacher || student) over 1 positive + hard negatives,
    L1 on the pivot view (lambda_q, lambda_d), LexEcho trained here."""

    stage: Literal["sct"] = "sct"
    loss: Literal["kl", "infonce"] = "kl"
    group_size: int = Field(8, ge=2, description="1 positive + group_size-1 hard negatives per query")
    negative_ceiling: float | None = Field(None, gt=0, description="no hard negative the teacher scores above this "
                                                                   "times the positive's score (likely a false "
                                                                   "negative: a page as good as the labelled one)")
    teacher_temperature: float = Field(0.02, gt=0, description="e5 cosine / T before the teacher softmax")
    lambda_q: float = Field(1e-3, ge=0)
    lambda_d: float = Field(1e-5, ge=0)
    regulariser: Literal["l1", "flops"] = Field("flops", description="sparsity term on the pivot views: FLOPS "
                                                                     "penalises terms active across the batch")
    regulariser_warmup: float = Field(0.3, ge=0, le=1, description="share of steps over which lambda grows "
                                                                   "quadratically to its value")
    pivot_only_weight: float = Field(1.0, ge=0, description="weight of a second ranking loss on the pivot view "
                                                            "alone (echo exact matches cannot solve it)")
    freeze_head: bool = Field(True, description="keep SAP's English head (transform + decoder) fixed")
    strip_title: bool = Field(True, description="positives without the page title (the query itself)")
    allow_failed_init: bool = Field(False, description="start even from a SAP delta that failed its gates")
    max_queries: int = Field(20_000, ge=1)
    query_sources: list[Literal["titles", "keywords"]] = Field(
        ["titles"], min_length=1, description="where queries come from: train-page titles, and the help's own index "
                                              "entries (keywords) that point only at train pages")
    teacher: Literal["states", "e5", "splade"] = Field(
        "e5", description="what mines the hard negatives and scores the groups: e5-small as it is meant to be used "
                          "(query: / passage: prefixes, final layer, normalised mean pooling), the mean of the "
                          "cached backbone states below the trained layers (states; milco-mini@1), or splade-tiny "
                          "on the English side (the English title of the query's page against each passage's "
                          "English page; for a keyword, the page it points at)")
    distill_weight: float = Field(0.0, ge=0, description="with loss infonce: weight of KL(teacher || student) over "
                                                         "each query's own group beside it")
    doc_languages: list[str] = Field(["en-us"], min_length=1, description="languages of the positive pages")
    query_max_length: int = Field(64, ge=8)
    passage_max_length: int = Field(128, ge=16)
    ground_weight: float = Field(0.0, ge=0, description="weight of SAP's sparse MSE (spec Eq. 8) on every passage "
                                                        "toward the English teacher's raw max-pooled logits of the "
                                                        "page's English text: keeps the pivot grounded while it "
                                                        "learns to rank")
    ground_top_k: int = Field(256, ge=1, description="teacher entries kept per passage (the rest count as 0)")
    common_lambda: float = Field(0.0, ge=0, description="weight of the common-term penalty: each pivot term active "
                                                        "in more than common_share of the batch's passages pays its "
                                                        "mean weight times that excess")
    common_share: float = Field(0.1, gt=0, lt=1, description="also: grounding targets scale each term in the "
                                                             "teacher's top 20 of a share df > this of the pages "
                                                             "by share / df")


class _CspladeConfig(BaseModel):
    """What both CSPLADE stages share (spec PART B): SmolLM2-135M with LoRA adapters, English help pages of
    the train split, a cosine schedule with linear warm-up, resumable checkpoints in ``output``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    output: Path = Field(..., description="directory for the adapter, the manifest and the log")
    lr: float = Field(2e-4, gt=0)
    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    lora_rank: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1, description="LoRA scale alpha / rank (alpha = 2r as in the reference code)")
    lora_layers: int = Field(0, ge=0, description="LoRA on the top N decoder layers only (0: all); the layers "
                                                  "below run without autograd, which makes a CPU step cheaper")
    threads: int = Field(0, ge=0, description="torch threads; 0 = torch's default")
    device: str = Field("cpu", description="torch device, e.g. cuda on a GPU machine")
    checkpoint_every: int = Field(10, ge=1, description="steps between resumable checkpoints")
    log_every: int = Field(1, ge=1, description="steps averaged per log record")


class CspladeAdaptConfig(_CspladeConfig):
    """Adaptation phase (spec B3.1): next-token CE on the logits plus lambda_relu x CE on log(1 + ReLU(logits)),
    on packed sequences of unlabelled English help text."""

    stage: Literal["csplade-adapt"] = "csplade-adapt"
    sequence_length: int = Field(128, ge=8, description="tokens per packed sequence")
    lambda_relu: float = Field(1.0, ge=0)
    probe_texts: int = Field(32, ge=1, description="held-out pages whose pooled vectors measure alive terms")


class CspladeConfig(_CspladeConfig):
    """Contrastive fine-tuning (spec B3.2): InfoNCE over 1 positive + hard negatives + in-batch negatives,
    FLOPS on queries and documents with a quadratic warm-up of lambda, LoRA on attention and MLP projections,
    LM head not adapted. Queries: titles of train-split English pages; documents: the pages without their title."""

    stage: Literal["csplade"] = "csplade"
    variant: Literal["causal", "echo", "bi"] = "causal"
    init: Path | None = Field(None, description="an adaptation output directory (its adapter is merged first); "
                                                "none: the raw LM")
    group_size: int = Field(2, ge=2, description="1 positive + group_size-1 hard negatives per query")
    negatives: Literal["dense", "random"] = Field("dense", description="hard negatives mined with e5-small")
    temperature: float = Field(1.0, gt=0)
    lambda_q: float = Field(3e-3, ge=0)
    lambda_d: float = Field(3e-3, ge=0)
    flops_warmup: float = Field(0.3, ge=0, le=1, description="share of steps over which lambda grows quadratically")
    query_max_length: int = Field(24, ge=4)
    passage_max_length: int = Field(64, ge=8, description="document tokens in training")
    document_max_length: int = Field(128, ge=8, description="document tokens at inference (the manifest's)")
    max_queries: int = Field(2000, ge=1)
    query_top_k: int = Field(0, ge=0, description="keep the k heaviest terms of each query in training (0: all); "
                                                  "the manifest makes it the model's query pruning")
    document_top_k: int = Field(0, ge=0, description="the same for documents")
    ground_weight: float = Field(0.0, ge=0, description="weight of a term-level distillation: squared error of "
                                                        "each query's and passage's pooled weights toward "
                                                        "splade-tiny's weights of the same text, spelled in the "
                                                        "LM's vocabulary (on the teacher's and the student's "
                                                        "kept terms)")
    ground_top_k: int = Field(64, ge=1, description="the teacher's heaviest terms kept as a target per text")
    common_share: float = Field(0.1, gt=0, lt=1, description="the teacher's terms among the top 20 of more than "
                                                             "this share of the texts are scaled by share / df")
    query_common_share: float | None = Field(None, gt=0, lt=1, description="common_share for the query targets "
                                                                           "alone (unset: common_share)")
    lambda_df: float = Field(0.0, ge=0, description="document-frequency-aware sparsity: each kept term's "
                                                    "weight times its share of training pages, summed per "
                                                    "text, averaged over queries and passages")
    lambda_df_q: float = Field(0.0, ge=0, description="the same penalty on queries alone (documents keep their "
                                                      "frequent terms, which a query may still match)")
    eval_every: int = Field(0, ge=0, description="dev nDCG@10 (libreoffice-en dev, in memory) and the share of "
                                                 "dev queries without a function word in their top 5, every N "
                                                 "steps and at the end (0: at the end only)")


def load_config(path: Path, kind: type[BaseModel]) -> BaseModel:
    """Read and check a TOML config; relative paths in it are taken relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    try:
        return kind.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path}: {problems}") from e
