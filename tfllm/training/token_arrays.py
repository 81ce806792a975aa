"""Training texts tokenized in bounded pieces into compact int32 arrays.

The tokenizers library holds well over 100 bytes per character of the text it encodes in one call
(alignments, offsets, token strings), and a Python list costs 8 to 36 bytes per id: a 50 MB
single-line file tokenized at once peaked at 7.4 GB. Here texts are encoded a group of at most
`GROUP_CHARS` characters at a time, a text longer than `PIECE_CHARS` in pieces, and the ids kept
as int32 arrays, so the cost is a small multiple of the file.

A long text is cut at a space between two non-space characters, where the pre-tokenizers of
byte-level BPE, WordPiece and SentencePiece split anyway, so its ids are those of one pass: the
tokenizer is probed once to learn whether the space starts the next piece (byte-level BPE) or is
dropped (tokenizers that prepend "▁" to every text), and which special tokens its template puts
around a text. When no rule reproduces the probe, or `PIECE_CHARS` characters hold no such space,
the text is cut anyway (ids may differ next to that cut) and a warning says so. `shorten` cuts a
long text that will be truncated to a few pieces before it is tokenized.
"""

import dataclasses
import logging
import re

import numpy as np

logger = logging.getLogger(__name__)

PIECE_CHARS = 65_536  # a longer text is encoded in pieces of at most this many characters
GROUP_CHARS = 65_536  # characters encoded in one call (the tokenizers library needs ~150 bytes each)
_LAST_CUT = re.compile(r".*\S( )\S", re.DOTALL)  # greedy: the last space between two non-spaces
_PROBE = ("Hello world, this is a probe: 12 345 6789 (x=1) it's  two spaces,\tand\na new line; "
          "Ünïcödé wörds résumé façade — done.")


@dataclasses.dataclass(frozen=True)
class _Cutting:
    """How a long text is cut and reassembled for one tokenizer."""

    keep_space: bool  # the space at a cut starts the next piece (else it is dropped)
    prefix: np.ndarray | None  # the template's special tokens around a text; None: unknown
    suffix: np.ndarray | None


def token_arrays(tokenizer, texts, add_special_tokens, piece_chars=PIECE_CHARS):
    """Yields the token ids of each text as an int32 array, the same ids as `tokenizer(texts)`.

    Args:
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        texts: an iterable of strings.
        add_special_tokens: add the template's special tokens (bos, eos, ...) to each text.
        piece_chars: texts longer than this are encoded in pieces (see the module docstring).
    """
    backend = tokenizer.backend_tokenizer
    cutting = None
    for group in _groups(texts, piece_chars):
        if len(group) == 1 and len(group[0]) > piece_chars:
            cutting = cutting or _probe(backend)
            yield _long_text_ids(backend, group[0], add_special_tokens, cutting, piece_chars)
        else:
            yield from _encode(backend, group, add_special_tokens)


def _encode(backend, texts, add_special_tokens):
    return [np.asarray(e.ids, np.int32) for e in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]


def _groups(texts, piece_chars):
    """Consecutive texts, at most `GROUP_CHARS` characters a group; a text longer than `piece_chars` alone."""
    group, size = [], 0
    for text in texts:
        long = len(text) > piece_chars
        if group and (long or size + len(text) > GROUP_CHARS):
            yield group
            group, size = [], 0
        group.append(text)
        size += len(text)
        if long:
            yield group
            group, size = [], 0
    if group:
        yield group


def _spans(text, piece_chars, keep_space):
    """`(start, end)` of consecutive pieces of `text` of at most `piece_chars` characters, cut at spaces when possible."""
    start = 0
    while len(text) - start > piece_chars:
        end = start + piece_chars
        match = _LAST_CUT.match(text, start + piece_chars // 2, end)
        if match is None:
            logger.warning("Characters %d to %d of a training text hold no space to cut at; cut at %d (the "
                           "tokens next to it may differ from one-pass tokenization)", start, end, end)
            cut = after = end
        else:
            cut = match.start(1)
            after = cut if keep_space else cut + 1
        yield start, cut
        start = after
    yield start, len(text)


def _long_text_ids(backend, text, add_special_tokens, cutting, piece_chars):
    if add_special_tokens and cutting.prefix is None:
        logger.warning("The tokenizer's special tokens around a text are unknown; tokenizing a text of %d "
                       "characters in one pass", len(text))
        return _encode(backend, [text], True)[0]
    parts = [cutting.prefix] if add_special_tokens else []
    pieces = [text[start:end] for start, end in _spans(text, piece_chars, cutting.keep_space)]
    step = max(1, GROUP_CHARS // piece_chars)
    for first in range(0, len(pieces), step):
        parts += _encode(backend, pieces[first:first + step], False)
    if add_special_tokens:
        parts.append(cutting.suffix)
    return np.concatenate(parts)


def shorten(tokenizer, texts, max_tokens, piece_chars=PIECE_CHARS):
    """`texts`, each one longer than `piece_chars` characters cut after its first pieces that hold more
    than `max_tokens` tokens: truncated to `max_tokens` tokens (pairs too), it gives the tokens the
    whole text would, and it is not all tokenized only to be truncated."""
    backend, cutting, shortened = tokenizer.backend_tokenizer, None, []
    for text in texts:
        if len(text) > piece_chars:
            cutting = cutting or _probe(backend)
            text = _head(backend, text, max_tokens, cutting, piece_chars)
        shortened.append(text)
    return shortened


def _head(backend, text, max_tokens, cutting, piece_chars):
    count = 0
    for start, end in _spans(text, piece_chars, cutting.keep_space):
        count += len(backend.encode(text[start:end], add_special_tokens=False).ids)
        if count > max_tokens:
            return text[:end]
    return text


def _probe(backend):
    """Learns how to cut and reassemble texts for `backend` (a `tokenizers.Tokenizer`)."""
    whole = backend.encode(_PROBE, add_special_tokens=False).ids
    cuts = [m.start() + 1 for m in re.finditer(r"\S (?=\S)", _PROBE)]
    exact = {}
    for keep_space in (True, False):
        exact[keep_space] = all(
            backend.encode(_PROBE[:cut], add_special_tokens=False).ids
            + backend.encode(_PROBE[cut if keep_space else cut + 1:], add_special_tokens=False).ids == whole
            for cut in cuts
        )
    keep_space = exact[True] or not exact[False]
    if not exact[keep_space]:
        logger.warning("Cutting a long training text at a space changes this tokenizer's ids next to the cut; "
                       "long texts are cut anyway, to bound memory")
    with_specials = backend.encode(_PROBE, add_special_tokens=True).ids
    prefix = suffix = None
    for start in range(len(with_specials) - len(whole) + 1):
        if with_specials[start:start + len(whole)] == whole:
            prefix = np.asarray(with_specials[:start], np.int32)
            suffix = np.asarray(with_specials[start + len(whole):], np.int32)
            break
    return _Cutting(keep_space, prefix, suffix)
