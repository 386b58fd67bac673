"""CLIP's byte-level BPE tokenizer, written from the description of OpenAI's SimpleTokenizer.

A text is cleaned (HTML entities unescaped twice, ``ftfy.fix_text`` first when ftfy is installed,
whitespace collapsed, stripped, lower-cased), split by CLIP's pre-tokenising regex, each piece's
UTF-8 bytes mapped to printable characters (``bytes_to_unicode``), the last character marked with
``</w>``, and the pieces merged pairwise in the order of the merges file. The vocabulary is the 256
byte characters, their ``</w>`` variants, one entry per merge, then ``<|startoftext|>`` and
``<|endoftext|>`` (49406 and 49407 with CLIP's ``bpe_simple_vocab_16e6.txt.gz``: 49408 in all).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.metadata
import itertools
from collections.abc import Sequence
from pathlib import Path

import regex
import torch
from torch import Tensor

from drivemtl.errors import DriveMTLError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP reads the merges lines[1 : 49152 - 256 - 2 + 1]: the header is skipped, 48894 merges at most.
MAX_MERGES = 49152 - 256 - 2
_HEADER = '"bpe_simple_vocab_16e6.txt#version: 0.2'
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")

try:  # ftfy repairs mojibake; CLIP uses it, but it is optional here (skipped when absent).
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None


class VocabularyError(DriveMTLError):
    """A BPE vocabulary that cannot be found or read, or a text that does not fit; one line."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's / GPT-2's reversible map from the 256 byte values to printable unicode characters.

    The printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to themselves; the
    other 68 bytes, in increasing order, to ``chr(256)``, ``chr(257)``, ... The dict's order (the
    printable bytes first) is the order of the first 256 vocabulary entries.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def pairs_of(word: Sequence[str]) -> set[tuple[str, str]]:
    """The set of adjacent symbol pairs of a word."""
    return set(itertools.pairwise(word))


def clean_text(text: str) -> str:
    """CLIP's cleaning: ftfy (when installed), HTML-unescape twice, collapse whitespace, lower-case."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The merges of a CLIP-format gzip file: header line skipped, at most 48894 merges."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as file:
            lines = file.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise VocabularyError(f"{path}: not a gzip BPE merges file ({error})") from None
    merges = []
    for number, line in enumerate(lines[1 : MAX_MERGES + 1], start=2):
        if not line.strip():
            continue
        parts = tuple(line.split())
        if len(parts) != 2:
            raise VocabularyError(f"{path}: line {number} is not a merge 'a b': {line!r}")
        merges.append(parts)
    return merges


class CLIPTokenizer:
    """Byte-level BPE exactly like CLIP's SimpleTokenizer (results cached per word).

    Text cleaning uses ``ftfy.fix_text`` only if ftfy can be imported (CLIP always does); ftfy is
    not a dependency, and without it that step is skipped. That changes nothing for plain,
    well-encoded text (class names, prompts) but differs from CLIP for mojibake, curly quotes
    (ftfy straightens them), full-width characters and decomposed accents (ftfy NFC-normalises).
    """

    def __init__(self, vocab_path: Path) -> None:
        self.vocab_path = Path(vocab_path)
        self.byte_encoder = bytes_to_unicode()
        merges = read_merges(self.vocab_path)
        symbols = list(self.byte_encoder.values())
        vocab = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(m) for m in merges)]
        vocab += [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {token: index for index, token in enumerate(vocab)}
        self.decoder: dict[int, str] = {index: token for token, index in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {m: rank for rank, m in enumerate(merges)}
        self.sot = self.encoder[SOT_TEXT]
        self.eot = self.encoder[EOT_TEXT]
        self.vocab_size = len(vocab)
        self._cache: dict[str, str] = {SOT_TEXT: SOT_TEXT, EOT_TEXT: EOT_TEXT}

    def bpe(self, token: str) -> str:
        """The BPE symbols of one pre-token (byte characters), space separated."""
        if token in self._cache:
            return self._cache[token]
        word = (*token[:-1], token[-1] + END_OF_WORD)
        pairs = pairs_of(word)
        while pairs:
            first, second = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if (first, second) not in self.bpe_ranks:
                break
            word = _merge_pair(word, (first, second))
            pairs = pairs_of(word) if len(word) > 1 else set()
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` after cleaning (no start / end tokens)."""
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(chars).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of BPE ids (start / end / padding tokens dropped); the inverse up to cleaning."""
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        skip = {self.sot, self.eot, 0}
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in skip)
        data = bytes(byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()

    def tokenize(self, texts: str | Sequence[str], context_length: int = 77) -> Tensor:
        """[N, context_length] long: sot + ids + eot, zero padded (a single str gives N = 1)."""
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                raise VocabularyError(
                    f"text {text!r} is too long: {len(ids)} tokens with start and end, "
                    f"context length {context_length}"
                )
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result


def _installed_vocabularies() -> tuple[list[Path], int]:
    """Paths of CLIP's vocabulary file in installed distributions, and how many were searched."""
    found: list[Path] = []
    searched = 0
    for dist in importlib.metadata.distributions():
        searched += 1
        for file in dist.files or ():
            if file.name == VOCAB_FILE:
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    found.append(path)
    return found, searched


def find_vocabulary(explicit: Path | str | None = None) -> Path:
    """The explicit path, else ``bpe_simple_vocab_16e6.txt.gz`` inside an installed distribution.

    Installed distributions (open-clip-torch, clip-anytorch, ...) are searched through
    ``importlib.metadata`` file lists: the package is never imported.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise VocabularyError(f"CLIP BPE vocabulary not found: {path} is not a file")
        return path
    found, searched = _installed_vocabularies()
    if found:
        return sorted(found)[0]
    raise VocabularyError(
        f"CLIP BPE vocabulary {VOCAB_FILE} not found: no path was given and none of the "
        f"{searched} installed distributions ships it; give its path explicitly (the file is "
        f"inside the open-clip-torch wheel, open_clip/{VOCAB_FILE})"
    )


def write_vocabulary(path: Path, merges: Sequence[tuple[str, str]]) -> Path:
    """Write a CLIP-format gzip merges file (header line, then one ``a b`` merge per line)."""
    path = Path(path)
    lines = [_HEADER]
    for merge in merges:
        if len(merge) != 2 or any(not part or regex.search(r"\s", part) for part in merge):
            raise ValueError(f"a merge is two non-empty symbols without whitespace, got {merge!r}")
        lines.append(f"{merge[0]} {merge[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    return path


def word_symbols(text: str) -> list[tuple[str, ...]]:
    """The pre-tokens of `text` as the BPE sees them: byte characters, the last with ``</w>``."""
    encoder = bytes_to_unicode()
    words = []
    for piece in _PATTERN.findall(clean_text(text)):
        chars = "".join(encoder[b] for b in piece.encode("utf-8"))
        words.append((*chars[:-1], chars[-1] + END_OF_WORD))
    return words


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def learn_merges(texts: Sequence[str], max_merges: int = MAX_MERGES) -> list[tuple[str, str]]:
    """BPE merges learned from `texts` (Sennrich et al.): repeatedly merge the most frequent
    adjacent pair (ties: the lexicographically smallest) until every word is one symbol or
    `max_merges` are learned. A small corpus (e.g. synthetic captions) gets a vocabulary in
    which each of its words is a single token, so a tiny CLIP can be trained on it."""
    counts: dict[tuple[str, ...], int] = {}
    for text in texts:
        for word in word_symbols(text):
            counts[word] = counts.get(word, 0) + 1
    merges: list[tuple[str, str]] = []
    while len(merges) < min(max_merges, MAX_MERGES):
        pairs: dict[tuple[str, str], int] = {}
        for word, n in counts.items():
            for pair in itertools.pairwise(word):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for word, n in counts.items():
            new = _merge_pair(word, best)
            merged[new] = merged.get(new, 0) + n
        counts = merged
    return merges
