"""CLIP's byte-level BPE tokenizer: hand-computed ids on a tiny vocabulary, and the real one if found.

Vocabulary order (CLIP's): the 256 byte characters (printable Latin-1 first: '!'..'~' are ids
0..93), then the same with '</w>' (+256), then one id per merge (512 + rank), then start and end.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
import torch

from drivemtl.models.language import tokenizer as tok
from drivemtl.models.language.tokenizer import (
    CLIPTokenizer,
    VocabularyError,
    bytes_to_unicode,
    find_vocabulary,
    learn_merges,
    write_vocabulary,
)

MERGES = [("c", "a"), ("ca", "t</w>"), ("a", "t</w>"), ("d", "o"), ("o", "g</w>")]
CA, CAT, AT, DO = 512, 513, 514, 515  # 512 + merge rank ("o g</w>" is 516)
SOT, EOT = 517, 518


def ascii_id(char: str, end: bool = False) -> int:
    """Id of a printable ASCII byte character ('!' is 0), +256 for its '</w>' variant."""
    return ord(char) - ord("!") + (256 if end else 0)


@pytest.fixture
def tiny(tmp_path: Path) -> CLIPTokenizer:
    return CLIPTokenizer(write_vocabulary(tmp_path / "tiny.txt.gz", MERGES))


def test_byte_table_is_gpt2s() -> None:
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[0xE9] == "é"
    assert table[0] == chr(256) and table[ord(" ")] == "Ġ"  # the famous GPT-2 space symbol
    assert table[127] == chr(256 + 33)  # after the 33 control bytes 0..32


def test_vocabulary_layout(tiny: CLIPTokenizer) -> None:
    assert tiny.vocab_size == 256 * 2 + len(MERGES) + 2
    assert (tiny.sot, tiny.eot) == (SOT, EOT)
    assert tiny.encoder["a</w>"] == ascii_id("a", end=True) == 320
    assert tiny.encoder["cat</w>"] == CAT


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("cat", [CAT]),  # c a t</w> -> ca t</w> (rank 0) -> cat</w> (rank 1)
        ("at", [AT]),
        ("a", [ascii_id("a", end=True)]),  # one character: no pairs
        ("dog", [DO, ascii_id("g", end=True)]),  # do g</w>: no merge joins them
        ("cats", [CA, ascii_id("t"), ascii_id("s", end=True)]),
        ("cat!", [CAT, ascii_id("!", end=True)]),
        ("it's", [ascii_id("i"), ascii_id("t", end=True), ascii_id("'"), ascii_id("s", end=True)]),
        ("12", [ascii_id("1", end=True), ascii_id("2", end=True)]),  # digits split one by one
        # é = bytes C3 A9: printable Latin-1, ids 94 + 12 + (0xC3 - 0xAE) and 94 + (0xA9 - 0xA1).
        ("é", [127, 256 + 102]),
        # ā = bytes C4 81: 0x81 is not printable; 188 printable + 33 controls + (0x81 - 0x7F).
        ("ā", [128, 256 + 188 + 33 + 2]),
    ],
)
def test_hand_computed_ids(tiny: CLIPTokenizer, text: str, ids: list[int]) -> None:
    assert tiny.encode(text) == ids


def test_cleaning(tiny: CLIPTokenizer) -> None:
    messy = "  A&amp;amp;B \n\t CAT  "  # entities unescaped twice, whitespace collapsed, lower case
    expected = [ascii_id("a", end=True), ascii_id("&", end=True), ascii_id("b", end=True), CAT]
    assert tiny.encode(messy) == tiny.encode("a&b cat") == expected
    assert tiny.decode(tiny.tokenize(messy)[0].tolist()) == "a & b cat"


def test_special_tokens_in_text(tiny: CLIPTokenizer) -> None:
    assert tiny.encode("<|startoftext|>cat<|endoftext|>") == [SOT, CAT, EOT]


def test_tokenize_places_sot_eot_and_pads(tiny: CLIPTokenizer) -> None:
    tokens = tiny.tokenize(["cat", "a dog"], context_length=6)
    assert tokens.dtype == torch.long
    expected = [
        [SOT, CAT, EOT, 0, 0, 0],
        [SOT, ascii_id("a", end=True), DO, ascii_id("g", end=True), EOT, 0],
    ]
    assert tokens.tolist() == expected
    assert torch.equal(tokens.argmax(-1), torch.tensor([2, 4]))  # eot is the largest id
    assert tiny.tokenize("cat", context_length=6).tolist() == expected[:1]


def test_overflow_names_the_text(tiny: CLIPTokenizer) -> None:
    assert tiny.tokenize(["a a a a"], context_length=6).shape == (1, 6)  # exactly fits
    with pytest.raises(VocabularyError, match=r"'a a a a a' is too long: 7 tokens") as info:
        tiny.tokenize(["cat", "a a a a a"], context_length=6)
    assert "\n" not in str(info.value)


def test_write_vocabulary_rejects_bad_merges(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two non-empty symbols"):
        write_vocabulary(tmp_path / "v.txt.gz", [("a b", "c")])


def test_unreadable_vocabulary_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt.gz"
    bad.write_text("not gzip")
    with pytest.raises(VocabularyError, match=r"bad\.txt\.gz: not a gzip BPE merges file"):
        CLIPTokenizer(bad)


def test_find_vocabulary_explicit(tmp_path: Path) -> None:
    path = write_vocabulary(tmp_path / "v.txt.gz", MERGES)
    assert find_vocabulary(path) == path
    assert find_vocabulary(str(path)) == path
    with pytest.raises(VocabularyError, match=r"missing\.txt\.gz is not a file"):
        find_vocabulary(tmp_path / "missing.txt.gz")


class _FakeDistribution:
    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = [PurePosixPath(f) for f in files]

    def locate_file(self, file: PurePosixPath) -> Path:
        return self.root / file


def test_find_vocabulary_in_installed_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = write_vocabulary(tmp_path / "open_clip" / tok.VOCAB_FILE, MERGES)
    dists = [
        _FakeDistribution(tmp_path, ["other/file.py"]),
        _FakeDistribution(tmp_path, ["open_clip/__init__.py", f"open_clip/{tok.VOCAB_FILE}"]),
    ]
    monkeypatch.setattr(tok.importlib.metadata, "distributions", lambda: iter(dists))
    assert find_vocabulary() == shipped


def test_find_vocabulary_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tok.importlib.metadata, "distributions", lambda: iter([]))
    with pytest.raises(VocabularyError, match="not found: no path was given") as info:
        find_vocabulary()
    message = str(info.value)
    assert "\n" not in message and "open-clip-torch" in message and tok.VOCAB_FILE in message


def _real_vocabulary() -> Path | None:
    explicit = os.environ.get("DRIVEMTL_CLIP_VOCAB")  # e.g. extracted from the open-clip wheel
    try:
        return find_vocabulary(explicit)
    except VocabularyError:
        return None


REAL = _real_vocabulary()


@pytest.mark.skipif(
    REAL is None,
    reason=f"CLIP's {tok.VOCAB_FILE} is not installed (set DRIVEMTL_CLIP_VOCAB to its path)",
)
def test_real_vocabulary() -> None:
    clip = CLIPTokenizer(REAL)
    assert (clip.sot, clip.eot, clip.vocab_size) == (49406, 49407, 49408)
    # 320 = "a</w>" (256 + 64); 1125, 539, 2368, 22697 are the merges ranked 613 ("pho to</w>"),
    # 27 ("o f</w>"), 1856 ("c at</w>") and 22185 ("di agram</w>") of the merges file.
    assert clip.decoder[1125] == "photo</w>" and clip.decoder[22697] == "diagram</w>"
    tokens = clip.tokenize(["a photo of a cat", "a diagram"])
    assert tokens.shape == (2, 77)
    assert tokens[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert tokens[1, :5].tolist() == [49406, 320, 22697, 49407, 0]
    assert not tokens[:, 8:].any()
    assert clip.encode("Hello, world's") == [3306, 267, 1002, 568]
    # Self-consistency: a lower-case word that is a vocabulary entry encodes to that one id.
    words = [
        w for w in clip.encoder if w.endswith("</w>") and w[:-4].isascii() and w[:-4].isalpha()
    ]
    for word in [w for w in words if w.islower()][::100]:
        assert clip.encode(word[:-4]) == [clip.encoder[word]], word


def test_learn_merges_hand_computed() -> None:
    """low x5, lower x2, newest x6, widest x3. Pair counts: (e, s) and (s, t</w>) 9 (tie: the
    smaller pair first); then (es, t</w>) 9; then (l, o) 7; then (e, w), (n, e) and
    (w, est</w>) tie at 6 and (e, w) is the smallest."""
    corpus = ["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3
    merges = learn_merges(corpus, max_merges=4)
    assert merges == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w")]
    assert learn_merges(["ab"]) == [("a", "b</w>")]  # stops once every word is one symbol


def test_learned_vocabulary_makes_every_corpus_word_one_token(tmp_path: Path) -> None:
    texts = ["a city street photo with 3 cars and a traffic sign; road, sky.", "traffic light"]
    tokenizer = CLIPTokenizer(write_vocabulary(tmp_path / "v.txt.gz", learn_merges(texts)))
    for word in ("city", "street", "traffic", "light", "cars", "road"):
        assert len(tokenizer.encode(word)) == 1, word
    assert tokenizer.decode(tokenizer.encode(texts[0])) == texts[0].replace(";", " ;").replace(
        ",", " ,").replace(".", " .")  # fmt: skip
