"""Structured answers: JSON schema / regex / grammar constraints inside the search (issue 17).

Mechanics on the tiny random-weight model (its text is noise, so only the constraint can make it
valid); one real-model check that extraction comes out right. The fast search is held to the slow
reference under constraints too.
"""

from __future__ import annotations

import json
import re
from typing import TypedDict

import pytest
from pydantic import BaseModel

from deal_core import ConfigError, RewardSet, ResponseFormat, SearchConfig
from deal_core.prompts import prepare_prompt
from deal_core.reference import reference_search
from deal_core.structure import as_response_format


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]


class Pet(TypedDict):
    kind: str
    legs: int


PROMPT = [{"role": "user", "content": "Describe a person as JSON."}]


def _reference(engine, prompt, rewards, config):
    prepared = prepare_prompt(engine.tokenizer, engine.model, prompt, alignment_prompt=None,
                              max_new_tokens=config.max_new_tokens)
    return reference_search(engine.model, engine.tokenizer, prepared, RewardSet.from_spec(rewards), config)


@pytest.mark.parametrize("settings", [
    dict(beam_width=1, top_k=1, lookahead=0),
    dict(beam_width=2, top_k=3, lookahead=3),
    dict(beam_width=2, top_k=2, lookahead=3, commit_tokens=2),
])
@pytest.mark.parametrize("budget", [24, 40])
def test_json_schema_answers_validate_on_random_model(tiny, settings, budget):
    # A random model writes noise: without the constraint none of these would parse.
    result = tiny.search(PROMPT, config=dict(settings, max_new_tokens=budget, response_format=Person))
    person = Person.model_validate_json(result.text)
    assert isinstance(person.age, int)
    assert len(result.token_ids) <= budget


def test_unconstrained_random_model_is_not_json(tiny):
    """The control for the test above: the same searches without a format are not valid JSON."""
    result = tiny.search(PROMPT, config=dict(beam_width=2, top_k=3, lookahead=3, max_new_tokens=24))
    with pytest.raises(ValueError):
        Person.model_validate_json(result.text)


def test_tight_budget_closes_the_structure(tiny):
    """The reserve: with barely enough tokens the answer still closes (the shortest completion is
    taken once the budget is tight), instead of being cut at max_new_tokens."""
    from deal_core.structure import build_constraint

    c = build_constraint(ResponseFormat.json_schema(Person), tiny.tokenizer, tiny.model.config.vocab_size,
                         {tiny.tokenizer.eos_token_id}, 64)
    shortest = len(c.closing_path(()))
    for budget in (shortest, shortest + 1, shortest + 3):
        result = tiny.search(PROMPT, config=dict(beam_width=2, top_k=2, lookahead=2, max_new_tokens=budget,
                                                 response_format=Person))
        Person.model_validate_json(result.text)
        assert len(result.token_ids) <= budget


def test_every_candidate_and_rollout_is_a_valid_prefix(tiny):
    """Masks apply before top-k and at every rollout position: the reward only ever sees valid
    prefixes of the pattern, and the answer matches it whole."""
    seen: list[str] = []

    def record(prompt, text):
        seen.append(text)
        return float(len(text))

    prefix = re.compile(r"^([0-9]{0,3}|[0-9]{3}-[a-z]{0,5})$")
    result = tiny.search("Code:", rewards=record,
                         config=dict(beam_width=2, top_k=4, lookahead=4, max_new_tokens=12,
                                     response_format={"type": "regex", "pattern": r"[0-9]{3}-[a-z]{2,5}"}))
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2,5}", result.text)
    assert seen and all(prefix.match(t) for t in seen), [t for t in seen if not prefix.match(t)]


def test_lark_grammar(tiny):
    grammar = 'start: "yes" | "no" | "maybe " NUM\nNUM: /[0-9]{1,3}/\n'
    result = tiny.search("Answer:", config=dict(beam_width=2, top_k=3, lookahead=2, max_new_tokens=8,
                                                response_format=ResponseFormat.grammar(grammar)))
    assert re.fullmatch(r"yes|no|maybe [0-9]{1,3}", result.text), result.text


@pytest.mark.parametrize("fmt", [
    ResponseFormat.json_schema(Person),
    {"type": "regex", "pattern": r"[a-c]{2}-\d{2,4}"},
])
def test_fast_equals_reference_under_constraints(tiny, fmt):
    config = SearchConfig(beam_width=2, top_k=3, lookahead=3, max_new_tokens=20, response_format=fmt)
    rewards = lambda prompt, text: text.count("a") / 4  # noqa: E731 - a reward that moves choices
    fast = tiny.search(PROMPT, rewards, config)
    ref = _reference(tiny, PROMPT, rewards, config)
    assert fast.token_ids == ref.token_ids
    assert fast.score == pytest.approx(ref.score, abs=1e-3)


def test_composes_with_rewards(tiny):
    """A reward chooses among valid answers: pushing for long names changes the answer, which stays
    valid."""
    base = tiny.search(PROMPT, config=dict(beam_width=2, top_k=4, lookahead=4, max_new_tokens=30,
                                           response_format=Pet))
    long = tiny.search(PROMPT, rewards=lambda p, t: len(t) / 10,
                       config=dict(beam_width=2, top_k=4, lookahead=4, max_new_tokens=30, response_format=Pet))
    for r in (base, long):
        pet = json.loads(r.text)
        assert set(pet) == {"kind", "legs"} and isinstance(pet["legs"], int)
    assert len(long.text) > len(base.text)


def test_spec_forms():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert as_response_format(schema).schema == schema
    assert as_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}).name == "x"
    assert as_response_format({"type": "json_object"}).schema == {"type": "object"}
    assert as_response_format(Pet).schema["required"] == ["kind", "legs"]
    assert as_response_format(Person).name == "Person"
    assert as_response_format({"type": "regex", "pattern": "a+"}).kind == "regex"
    cfg = SearchConfig(response_format=Person)
    assert SearchConfig(**cfg.model_dump()).response_format == cfg.response_format  # round trip
    with pytest.raises(ConfigError, match="response_format"):
        SearchConfig(response_format=42)


def test_stop_strings_and_format_conflict():
    with pytest.raises(ConfigError, match="stop strings"):
        SearchConfig(stop=["}"], response_format=Person)


@pytest.mark.parametrize("bad, match", [
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "strin"),
    ({"type": "regex", "pattern": "a(b"}, "unclosed group"),
    ({"type": "grammar", "grammar": "start: x\n"}, "x"),
])
def test_bad_format_is_a_config_error_naming_it(tiny, bad, match):
    with pytest.raises(ConfigError, match="response_format") as info:
        tiny.search("x", config=dict(max_new_tokens=8, response_format=bad))
    assert re.search(re.escape(match), str(info.value))
    # The engine stays usable.
    assert tiny.search("x", config=dict(max_new_tokens=2, beam_width=1, top_k=1, lookahead=0)).text is not None


def test_format_that_cannot_close_in_budget_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match=r"cannot be completed within max_new_tokens=5"):
        tiny.search("x", config=dict(max_new_tokens=5, response_format=Person))


@pytest.mark.slow
def test_real_model_extracts_valid_json(engine):
    class Contact(BaseModel):
        name: str
        age: int
        city: str

    prompt = [{"role": "user", "content": "Extract name, age and city as JSON from: "
               "'Maria Lopez is 34 years old and lives in Madrid.'"}]
    result = engine.search(prompt, config=dict(beam_width=1, top_k=1, lookahead=0, max_new_tokens=40,
                                               response_format=Contact))
    contact = Contact.model_validate_json(result.text)
    assert contact.name == "Maria Lopez" and contact.age == 34 and contact.city == "Madrid"


def test_tool_grammar_cannot_produce_an_unknown_tool_or_bad_arguments(tiny):
    from deal_core.structure import build_constraint
    from deal_core.structure.tools import ToolSpec, parse_tool_calls, render_tool_calls, tool_call_format

    tools = [ToolSpec("add", "Add.", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                       "b": {"type": "integer"}},
                                      "required": ["a", "b"]}),
             ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}},
                                                  "required": ["city"]})]
    c = build_constraint(tool_call_format(tools, "any"), tiny.tokenizer, tiny.model.config.vocab_size,
                         {tiny.tokenizer.eos_token_id}, 64)

    def ids(text):
        return tiny.tokenizer(text, add_special_tokens=False)["input_ids"]

    good = render_tool_calls([{"name": "add", "arguments": {"a": 1, "b": 2}}])
    assert c.is_complete(ids(good))
    assert parse_tool_calls(good) == ("", [{"name": "add", "arguments": {"a": 1, "b": 2}}])
    assert not c.can_close(ids('<tool_call>\n{"name": "refund"'))  # not a bound tool
    assert not c.can_close(ids('<tool_call>\n{"name": "add", "arguments": {"a": "x'))  # a is an integer
    assert not c.can_close(ids("Sure, the answer is"))  # "any": text is not allowed
    auto = build_constraint(tool_call_format(tools, "auto"), tiny.tokenizer, tiny.model.config.vocab_size,
                            {tiny.tokenizer.eos_token_id}, 64)
    assert auto.is_complete(ids("Sure, the answer is 3."))
    with pytest.raises(ConfigError, match="refund"):
        tool_call_format(tools, "refund")


def test_a_prefix_ending_mid_character_can_still_close(tiny):
    """Byte-level BPE: a token may hold only the first byte of a UTF-8 character (the random model
    wrote one inside a JSON string). The closing path must continue it with byte tokens; it used to
    find no path, so the only candidate of a constrained greedy search was dropped (StructureError)."""
    from deal_core.structure import build_constraint

    class Joke(BaseModel):
        setup: str
        punchline: str

    c = build_constraint(as_response_format(Joke), tiny.tokenizer, tiny.model.config.vocab_size,
                         {tiny.tokenizer.eos_token_id}, 40)
    lead = "\u0645".encode()[:1]  # first byte of an Arabic letter
    (fragment,) = [i for i in range(tiny.model.config.vocab_size) if c.tables.ll.decode_bytes([i]) == lead]
    prefix = tiny.tokenizer('{"setup": "a', add_special_tokens=False)["input_ids"] + [fragment]
    path = c.closing_path(prefix)
    assert path is not None and c.can_close(prefix)
    assert c.is_complete(prefix + path)
    Joke.model_validate_json(c.tables.ll.decode_bytes(prefix + path).decode())
    # And end to end: the search that raised StructureError now answers.
    result = tiny.search("Tell me a joke.", config=dict(beam_width=1, top_k=1, lookahead=0, max_new_tokens=40,
                                                        response_format=Joke))
    Joke.model_validate_json(result.text)
