"""A byte-level BPE tokenizer trained on the pretraining corpus (MiniMind: 6400 tokens).

Saved as a transformers `PreTrainedTokenizerFast`, so `AutoTokenizer.from_pretrained`
on a checkpoint folder gives it back with its EOS and padding tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# MiniMind's special tokens, in its order: ids 0, 1, 2.
PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"


def train_bpe(texts: Iterable[str], vocab_size: int = 6400) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; every byte stays encodable (no unknown tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        unk_token=None, clean_up_tokenization_spaces=False,
    )
