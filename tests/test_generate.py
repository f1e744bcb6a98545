"""Generation: the decoding loop stops cleanly, respects limits and is reproducible."""

from __future__ import annotations

import pytest

from viz.errors import InvalidInput, LimitExceeded
from viz.models.generate import (
    GenerationSettings,
    _held_back,
    chat_prompt_ids,
    end_of_turn_ids,
    generate_text,
)
from viz.models.loading import load_folder

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):  # type: ignore[no-untyped-def]
    return load_folder(tiny_model_folder, "fp32")


def test_a_random_model_runs_to_max_tokens_and_reports_length(tiny, tokenizer) -> None:
    stream = generate_text(tiny, tokenizer, QUESTION, GenerationSettings(max_tokens=12))
    text = "".join(stream)

    assert stream.finish_reason in {"length", "stop"}
    assert stream.completion_tokens <= 12
    assert text == stream.text
    assert stream.prompt_tokens == len(chat_prompt_ids(tokenizer, QUESTION, prompt_tokens_max=999))


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tiny, tokenizer) -> None:
    def run(**options):  # type: ignore[no-untyped-def]
        return "".join(generate_text(tiny, tokenizer, QUESTION, GenerationSettings(**options)))

    assert run(max_tokens=10) == run(max_tokens=10)
    sampled = dict(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert run(**sampled) == run(**sampled)


@pytest.mark.model
def test_a_stop_string_ends_the_answer_and_is_not_shown(smollm2) -> None:
    settings = GenerationSettings(max_tokens=64, stop=("Paris",))
    stream = generate_text(smollm2.model, smollm2.tokenizer, QUESTION, settings)
    pieces = list(stream)

    assert "".join(pieces) == stream.text
    assert "Paris" not in stream.text
    assert "France" in stream.text
    assert stream.finish_reason == "stop"


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    assert _held_back("The answer is Par", ("Paris",)) == 3
    assert _held_back("The answer is", ("Paris",)) == 0
    assert _held_back("abc\n\nUs", ("\n\nUser:",)) == 4


def test_end_of_turn_includes_the_chat_end_token(tiny, tokenizer) -> None:
    ids = end_of_turn_ids(tiny, tokenizer)

    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (GenerationSettings(max_tokens=0), InvalidInput),
        (GenerationSettings(temperature=3.0), InvalidInput),
        (GenerationSettings(top_p=0.0), InvalidInput),
        (GenerationSettings(stop=("",)), InvalidInput),
        (GenerationSettings(max_tokens=5000), LimitExceeded),
    ],
)
def test_bad_settings_are_refused(tiny, tokenizer, settings, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        generate_text(tiny, tokenizer, QUESTION, settings, max_tokens_limit=2048)


def test_a_prompt_over_the_limit_is_refused_not_truncated(tokenizer) -> None:
    long_question = [{"role": "user", "content": "word " * 500}]

    with pytest.raises(LimitExceeded, match="VIZ_PROMPT_TOKENS_MAX"):
        chat_prompt_ids(tokenizer, long_question, prompt_tokens_max=100)


def test_unknown_roles_are_refused(tokenizer) -> None:
    with pytest.raises(InvalidInput, match="role"):
        chat_prompt_ids(tokenizer, [{"role": "wizard", "content": "hi"}], prompt_tokens_max=99)


@pytest.mark.model
def test_the_default_model_answers_correctly_and_stops_at_end_of_turn(smollm2) -> None:
    stream = generate_text(
        smollm2.model, smollm2.tokenizer, QUESTION, GenerationSettings(max_tokens=64)
    )
    answer = "".join(stream)

    assert "Paris" in answer
    assert stream.finish_reason == "stop"
    assert stream.completion_tokens < 64
    assert "<|im" not in answer and "user" not in answer.lower()


def test_penalties_and_bias_follow_openais_definitions() -> None:
    import torch

    from viz.models.sampling import adjust

    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    generated = [0, 0, 2]  # token 0 twice, token 2 once
    settings = GenerationSettings(
        frequency_penalty=0.5, presence_penalty=0.25, logit_bias=((3, -10.0),)
    )
    # mu[j] - c[j] * frequency - (c[j] > 0) * presence, after the bias
    expected = torch.tensor([2.0 - 1.0 - 0.25, -1.0, 0.5 - 0.5 - 0.25, 3.0 - 10.0])
    assert torch.allclose(adjust(logits, settings, [1], generated), expected)
    # repetition (over prompt and answer): positive logits divided, negative multiplied
    repeat = GenerationSettings(repetition_penalty=2.0)
    assert adjust(logits, repeat, [1], [0]).tolist() == [1.0, -2.0, 0.5, 3.0]
    assert adjust(logits, GenerationSettings(), [1], generated) is logits  # nothing to do


def test_each_token_is_spelled_by_its_exact_bytes(tokenizer) -> None:
    from viz.serving.logprobs import TokenTexts

    texts = TokenTexts(tokenizer)
    ids = tokenizer("Café in Zürich", add_special_tokens=False)["input_ids"]
    spelled = b"".join(bytes(texts.of(token)[1]) for token in ids)
    assert spelled.decode() == "Café in Zürich"
    assert texts.of(tokenizer.convert_tokens_to_ids("Ġthe")) == (" the", [32, 116, 104, 101])
