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
