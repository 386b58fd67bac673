"""CoOp prompts: assembly against hand-built token sequences, initialisation, caching, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from drivemtl.models.adapters.prompts import PromptLearner, prompt_token_ids
from drivemtl.models.language import CLIPTextEncoder, CLIPTokenizer, write_vocabulary

MERGES = [("r", "o"), ("ro", "a"), ("roa", "d</w>"), ("c", "a"), ("ca", "r</w>"), ("p", "h")]


@pytest.fixture
def tokenizer(tmp_path: Path) -> CLIPTokenizer:
    return CLIPTokenizer(write_vocabulary(tmp_path / "vocab.txt.gz", MERGES))


def tiny_encoder(tokenizer: CLIPTokenizer, context_length: int = 24) -> CLIPTextEncoder:
    torch.manual_seed(0)
    encoder = CLIPTextEncoder.build(
        width=16, layers=2, heads=2, context_length=context_length,
        vocab_size=tokenizer.vocab_size, output_dim=12,
    )  # fmt: skip
    return encoder.requires_grad_(False).eval()


def test_prompt_assembly_matches_a_hand_built_token_sequence(tokenizer: CLIPTokenizer) -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(tokenizer.vocab_size, 8)
    learner = PromptLearner(["road", "traffic light"], tokenizer, embedding, 24, n_ctx=4)
    x, eot_index = learner()
    assert x.shape == (2, 24, 8) and eot_index.dtype == torch.long
    emb = embedding.weight.detach()
    for row, name in enumerate(["road", "traffic light"]):
        name_ids = tokenizer.encode(name) + tokenizer.encode(".")
        # position 0: sot; 1..4: the context; then the name, "."; then eot; then id-0 padding
        expected = [emb[tokenizer.sot], *learner.context.detach()]
        expected += [emb[i] for i in name_ids] + [emb[tokenizer.eot]]
        assert int(eot_index[row]) == len(expected) - 1 == 1 + 4 + len(name_ids)
        expected += [emb[0]] * (24 - len(expected))
        assert torch.equal(x[row].detach(), torch.stack(expected))
    assert tokenizer.encode("road") == [tokenizer.encode("road")[0]]  # a merged word: one token
    fresh, _ = learner(embedding)
    assert torch.equal(fresh, x)


def test_only_the_context_is_a_parameter_and_fixed_parts_are_not_saved(
    tokenizer: CLIPTokenizer,
) -> None:
    embedding = nn.Embedding(tokenizer.vocab_size, 8)
    learner = PromptLearner(["car"], tokenizer, embedding, 16, n_ctx=3)
    assert [n for n, _ in learner.named_parameters()] == ["context"]
    assert list(learner.state_dict()) == ["context"]
    x, _ = learner()
    x.sum().backward()
    assert learner.context.grad is not None and embedding.weight.grad is None


def test_context_initialisation(tokenizer: CLIPTokenizer) -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(tokenizer.vocab_size, 64)
    random = PromptLearner(["car"], tokenizer, embedding, 40, n_ctx=16)
    assert random.context.shape == (16, 64)
    assert abs(float(random.context.detach().std()) - 0.02) < 0.003
    assert abs(float(random.context.detach().mean())) < 0.003
    phrase = PromptLearner(["car"], tokenizer, embedding, 40, ctx_init="a photo of a")
    ids = tokenizer.encode("a photo of a")
    assert phrase.n_ctx == len(ids)
    assert torch.equal(phrase.context.detach(), embedding.weight.detach()[ids])


def test_a_class_name_too_long_for_the_context_is_named(tokenizer: CLIPTokenizer) -> None:
    tokens, eot = prompt_token_ids(["car"], tokenizer, n_ctx=4, context_length=8)  # fits exactly
    car, dot = tokenizer.encode("car") + tokenizer.encode(".")
    assert tokens.tolist() == [[tokenizer.sot, 0, 0, 0, 0, car, dot, tokenizer.eot]]
    assert eot.tolist() == [7]
    embedding = nn.Embedding(tokenizer.vocab_size, 8)
    with pytest.raises(ValueError, match=r"^class name 'motorcycle' of task 'semantic' is too"):
        PromptLearner(["car", "motorcycle"], tokenizer, embedding, 8, n_ctx=4, task="semantic")


def test_class_features_equal_the_encoder_on_the_same_text(tokenizer: CLIPTokenizer) -> None:
    """With the context set to a phrase's embeddings, the features are those of the plain text."""
    encoder = tiny_encoder(tokenizer).double()
    names = ["road", "car", "traffic light"]
    learner = PromptLearner(names, tokenizer, encoder.token_embedding, 24, ctx_init="a photo of")
    learner.double()
    features = learner.class_features(encoder)
    texts = [f"a photo of {name}." for name in names]
    reference = encoder.encode(tokenizer.tokenize(texts, context_length=24))
    assert features.dtype == torch.float64
    assert torch.allclose(features, reference, atol=1e-12)


def test_class_features_are_cached_while_the_context_is_frozen(tokenizer: CLIPTokenizer) -> None:
    encoder = tiny_encoder(tokenizer)
    calls = []
    encode = encoder.encode_embeddings
    encoder.encode_embeddings = lambda x, eot: calls.append(1) or encode(x, eot)  # type: ignore[method-assign]
    learner = PromptLearner(["road", "car"], tokenizer, encoder.token_embedding, 24, n_ctx=4)

    first = learner.class_features(encoder)  # trainable: computed each time, with a graph
    first.sum().backward()
    assert learner.context.grad is not None and learner.context.grad.abs().sum() > 0
    learner.class_features(encoder)
    assert len(calls) == 2

    learner.context.requires_grad_(False)
    frozen = [learner.class_features(encoder) for _ in range(3)]
    assert len(calls) == 3 and all(f is frozen[0] for f in frozen)
    assert not frozen[0].requires_grad
    assert torch.allclose(frozen[0], first.detach())

    with torch.no_grad():
        learner.context.mul_(2.0)  # an in-place change (an optimizer step, a load) recomputes
    changed = learner.class_features(encoder)
    assert len(calls) == 4 and not torch.allclose(changed, frozen[0])
    learner.class_features(encoder)
    assert len(calls) == 4
    learner.refresh(encoder.token_embedding)
    learner.class_features(encoder)
    assert len(calls) == 5
