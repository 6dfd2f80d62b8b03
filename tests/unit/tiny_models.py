"""Tiny random models and real (tiny) tokenizers, built offline for unit tests."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

WORDS = "the a heart attack blood tea green water hot cold dog cat sun energy solar panel volcano lava".split()
PIECES = ["▁der", "▁Hund", "▁Herz", "infarkt", "▁Tee", "▁grün", "▁Wasser", "▁Sonne", "▁Vulkan", "▁und", "s", "en"]


def english_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer with BERT's special tokens and post-processing."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "u.s.", "##s", "##ing", *WORDS]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def multilingual_tokenizer() -> PreTrainedTokenizerFast:
    """An XLM-R-like unigram tokenizer: <s> .. </s>, pad id 1, Metaspace pieces."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    letters = [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyzäöü"] + [("▁", -5.0)]
    vocab = specials + [(p, -2.0) for p in PIECES] + [(f"▁{w}", -3.0) for w in WORDS] + letters
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>",
    )


def save_tiny_bert_mlm(directory: Path, hidden: int = 16, seed: int = 0):  # noqa: ANN201
    """A random BertForMaskedLM + WordPiece tokenizer saved as a Hugging Face directory."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = english_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
    )
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def save_tiny_xlmr(directory: Path, hidden: int = 24, seed: int = 1):  # noqa: ANN201
    """A random XLMRobertaModel + unigram tokenizer saved as a Hugging Face directory."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = multilingual_tokenizer()
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=80, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    model = XLMRobertaModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def save_tiny_bert_backbone(directory: Path, hidden: int = 24, seed: int = 2):  # noqa: ANN201
    """A random BertModel (no pooler) with the XLM-R-like unigram tokenizer: milco-mini's backbone layout."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = multilingual_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer) + 3, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=40, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    config.architectures = ["BertModel"]
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def save_tiny_bert_milco(root: Path, connector_hidden: int = 32, seed: int = 4, changed_top_layers: int = 0,
                         change_embeddings: bool = False) -> Path:
    """A tiny MILCO checkpoint assembled the way milco-mini is (``build_model``): a BertModel backbone and a
    BERT MLM head referenced by relative paths, ``model.safetensors`` with every parameter but the tied decoder
    bias, the backbone's tokenizer saved next to it. ``changed_top_layers`` backbone layers (and with
    ``change_embeddings`` the embeddings) differ from the backbone directory's, as training changes them.
    Returns the checkpoint directory."""
    import json
    import os

    import torch
    from safetensors.torch import save_file

    from milco_os.models.milco import MilcoModule

    m_dir, en_dir, ckpt = root / "backbone", root / "head", root / "milco"
    backbone, tokenizer = save_tiny_bert_backbone(m_dir)
    en_model, _ = save_tiny_bert_mlm(en_dir)
    torch.manual_seed(seed)
    head = en_model.cls
    head.predictions.decoder.weight = torch.nn.Parameter(head.predictions.decoder.weight.detach().clone())
    module = MilcoModule(backbone, head, encoder_hidden=backbone.config.hidden_size,
                         head_hidden=en_model.config.hidden_size, echo_impl="code",
                         special_token_ids=list(tokenizer.all_special_ids), connector_hidden=connector_hidden)
    with torch.no_grad():
        module.echo.bias.fill_(0.5)  # most tokens get a positive echo weight
        module.scale.fill_(1.3)
        changed = list(module.m_model.encoder.layer[len(module.m_model.encoder.layer) - changed_top_layers:])
        if change_embeddings:
            changed.append(module.m_model.embeddings)
        for part in changed:
            for p in part.parameters():
                p.add_(0.05 * torch.randn_like(p))
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in module.state_dict().items() if k != "mlm_head.predictions.decoder.bias"}
    save_file(state, str(ckpt / "model.safetensors"))
    tokenizer.save_pretrained(ckpt)
    config = {
        "model_type": "milco",
        "multilingual_encoder_checkpoint": os.path.relpath(m_dir, ckpt),
        "lsr_encoder_checkpoint": os.path.relpath(en_dir, ckpt),
        "m_hidden_size": backbone.config.hidden_size,
        "en_hidden_size": en_model.config.hidden_size,
        "connector_hidden": connector_hidden,
        "m_vocab_size": backbone.config.vocab_size,
        "en_vocab_size": en_model.config.vocab_size,
        "echo": True,
        "echo_impl": "code",
        "query_max_length": 16,
        "passage_max_length": 24,
    }
    (ckpt / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return ckpt
