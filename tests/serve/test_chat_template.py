"""Chat prompts as the model was trained to see them: the GGUF's own Jinja template
when it carries one, else llama.cpp's built-in template for its architecture."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from llmutil import MODEL  # noqa: F401  (skips without the llm extra)

from peregrine.serve.model import LlamaModel, default_model_path

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    m = LlamaModel(default_model_path(), slots=1, n_ctx=256, n_batch=64, threads=1)
    yield m
    m.close()


def text(model: LlamaModel, tokens: list[int]) -> str:
    return "".join(model.piece(t) for t in tokens)


def test_a_model_without_a_template_gets_its_architectures(model: LlamaModel) -> None:
    # The shipped Gemma 3 270M is the base model: its GGUF has no template.
    assert model.info.chat_template is None
    prompt = text(model, model.chat_prompt(CHAT))
    assert prompt.startswith("<bos><start_of_turn>user\n")
    assert "Be brief." in prompt and "Name a colour.<end_of_turn>\n" in prompt
    assert prompt.endswith("<start_of_turn>model\n")  # the model speaks next
    # The turn markers are the vocabulary's special tokens, not spelled-out text.
    assert model.tokenize("<start_of_turn>", False, True) != \
        model.tokenize("<start_of_turn>", False, False)
    assert model.tokenize("<start_of_turn>", False, True)[0] in model.chat_prompt(CHAT)


def test_a_template_in_the_metadata_is_the_one_used(model: LlamaModel) -> None:
    jinja = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
             "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
             "{% endif %}")
    own = LlamaModel.__new__(LlamaModel)
    own.__dict__.update(model.__dict__)
    own.info = dataclasses.replace(model.info, chat_template=jinja)
    own._formatter = None
    prompt = text(own, own.chat_prompt(CHAT))
    assert prompt == ("<bos><|system|>Be brief.<eos><|user|>Name a colour.<eos>"
                      "<|assistant|>")
