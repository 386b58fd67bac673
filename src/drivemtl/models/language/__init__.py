"""Language models: CLIP's text transformer and its byte-level BPE tokenizer."""

from drivemtl.models.language.clip_text import CLIPTextEncoder, load_clip_text
from drivemtl.models.language.tokenizer import (
    CLIPTokenizer,
    find_vocabulary,
    learn_merges,
    write_vocabulary,
)

__all__ = [
    "CLIPTextEncoder",
    "CLIPTokenizer",
    "find_vocabulary",
    "learn_merges",
    "load_clip_text",
    "write_vocabulary",
]
