"""Tokenizers for the tiny models, built in code from fixed word lists (no hub, no training).

Every builder is deterministic: the same call gives the same vocabulary, merges and ids.
The module name shadows the `tokenizers` package only inside this package; absolute imports
(`from tokenizers import ...`) still reach the real library.
"""

from __future__ import annotations

import string
from functools import lru_cache

# Words that become single tokens, so prompts in tests and demos tokenize to short, readable ids.
WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "on", "in", "at", "to", "and", "is", "what", "this", "picture", "image", "photo",
    "video", "cat", "dog", "fox", "person", "park", "beach", "sunset", "waves", "red", "chair", "running",
    "sitting", "talking", "camera", "describe", "detail", "close", "up", "cinematic", "blurry", "quick",
    "brown", "lazy", "jumps", "over", "morning", "USER", "ASSISTANT",
)


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2/CLIP byte-to-unicode table: 256 printable characters, one per byte, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return tuple(chr(table[b]) for b in range(256))


def _add_word_merges(word_forms: list[list[str]], vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Left-to-right merge chains that turn each symbol sequence into one token."""
    seen = set(merges)
    for symbols in word_forms:
        cur = symbols[0]
        for nxt in symbols[1:]:
            pair = (cur, nxt)
            cur = cur + nxt
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            vocab.setdefault(cur, len(vocab))


def clip_tokenizer(model_max_length: int = 77):
    """A byte-level CLIP BPE (`CLIPTokenizer`) with < 1000 ids; SDXL pads prompts to model_max_length."""
    from transformers import CLIPTokenizer

    chars = byte_alphabet()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []  # CLIPTokenizer wants (a, b) tuples, not "a b" strings
    forms = [[*w[:-1], w[-1] + "</w>"] for w in WORDS if len(w) > 1]
    _add_word_merges([[s.lower() for s in f] for f in forms], vocab, merges)  # CLIP lower-cases its input
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def t5_tokenizer(model_max_length: int = 128):
    """A Unigram `T5Tokenizer` in T5's id layout (<pad>=0, </s>=1, <unk>=2), no sentinel tokens."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for c in string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-:;()":
        pieces += [(c, -5.0), ("▁" + c, -5.5)]
    pieces += [("▁" + w, -3.0) for w in WORDS if len(w) > 1]
    # vocab=[(piece, score)] builds the model in code; T5Tokenizer(vocab_file=...) would be silently ignored.
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def llava_tokenizer(model_max_length: int = 512):
    """A byte-level BPE (encodes any text) with Llama-style specials and `<image>` as one special token.

    Saved as tokenizer.json; `AutoProcessor.from_pretrained` reloads it as a fast tokenizer.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(LLAVA_SPECIALS)}
    for c in byte_alphabet():
        vocab[c] = len(vocab)
    merges: list[tuple[str, str]] = []
    space = byte_alphabet()[ord(" ")]  # "Ġ"
    _add_word_merges([list(w) for w in WORDS if len(w) > 1] + [[space, *w] for w in WORDS], vocab, merges)

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAVA_SPECIALS])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=model_max_length, padding_side="left",
    )
