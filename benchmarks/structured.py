"""Structured answers: JSON validity, schema validity and field accuracy, with and without DeAL.

    python benchmarks/structured.py                # all 32 tasks, all methods -> out/structured/*.jsonl
    python benchmarks/structured.py report --write # table -> RESULTS.md (between the markers)

Tasks (written for this benchmark, in this file): 20 extractions of a short text into a pydantic
schema (``Contact``: name, age, city; ``Product``: name, price, color) and 12 tool choices among
three tools with arguments (``get_weather``, ``convert_currency``, ``set_reminder``), in the
``<tool_call>`` format of ``deal_core.structure.tools``.

Methods (same chat prompt, embedded SmolLM2-135M-Instruct, at most 48 new tokens):

- ``greedy``: plain greedy decoding; the answer is parsed leniently (the first ``{`` to the last
  ``}``; for tools, the first ``<tool_call>`` block).
- ``constrained greedy``: greedy with ``response_format`` (the schema; for tools, the tool-call
  grammar with ``tool_choice="any"``).
- ``deal``: DeAL (beam 2, top-k 3, lookahead 4) with the same constraint and a task reward,
  :func:`grounded`: the share of the answer's string and number values (partial ones included, as
  rollouts stop mid-value) that appear in the user's text -- extracted values must come from the
  source.

Metrics per method: valid JSON (the answer parses), schema-valid (it validates against the schema /
the tool's argument model), field accuracy (expected fields equal after lower-casing and trimming;
numbers compared as numbers; the tool name counts as a field; a field of an invalid answer is wrong).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from deal_core import ResponseFormat, SearchConfig, get_engine
from deal_core.structure.tools import ToolSpec, parse_tool_calls, tool_call_format, tools_prompt

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "structured"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- structured table: begin -->", "<!-- structured table: end -->"


class Contact(BaseModel):
    name: str
    age: int
    city: str


class Product(BaseModel):
    name: str
    price: float
    color: str


class GetWeather(BaseModel):
    city: str


class ConvertCurrency(BaseModel):
    amount: float
    from_currency: str
    to_currency: str


class SetReminder(BaseModel):
    task: str
    time: str


TOOLS = {"get_weather": GetWeather, "convert_currency": ConvertCurrency, "set_reminder": SetReminder}
TOOL_DOCS = {"get_weather": "Get the current weather in a city.",
             "convert_currency": "Convert an amount of money from one currency to another (3-letter codes).",
             "set_reminder": "Set a reminder to do a task at a time."}

CONTACTS = [
    ("Maria Lopez is 34 years old and lives in Madrid.", ("Maria Lopez", 34, "Madrid")),
    ("Our new neighbour, Tom Becker (52), moved here from Berlin.", ("Tom Becker", 52, "Berlin")),
    ("Aiko Tanaka, a 28-year-old engineer from Osaka, joined the team.", ("Aiko Tanaka", 28, "Osaka")),
    ("At 45, Pierre Dubois still runs a bakery in Lyon.", ("Pierre Dubois", 45, "Lyon")),
    ("The winner was Sara Nilsson, 19, of Stockholm.", ("Sara Nilsson", 19, "Stockholm")),
    ("John Carter lives in Denver. He turned 61 last week.", ("John Carter", 61, "Denver")),
    ("Priya Patel (age 37) is a doctor in Mumbai.", ("Priya Patel", 37, "Mumbai")),
    ("Lukas Novak, who is 23, studies in Prague.", ("Lukas Novak", 23, "Prague")),
    ("Born 70 years ago, Ana Souza has always lived in Lisbon.", ("Ana Souza", 70, "Lisbon")),
    ("Meet Omar Haddad: 31 years old, based in Cairo.", ("Omar Haddad", 31, "Cairo")),
]
PRODUCTS = [
    ("The red Trail Runner shoes cost 89.99 dollars.", ("Trail Runner", 89.99, "red")),
    ("Get the blue Aqua Bottle for only 12.50!", ("Aqua Bottle", 12.5, "blue")),
    ("Our black Studio Headphones are priced at 199 dollars.", ("Studio Headphones", 199, "black")),
    ("A green Garden Chair now sells for 45.", ("Garden Chair", 45, "green")),
    ("New: the white Cloud Pillow, 29.95 each.", ("Cloud Pillow", 29.95, "white")),
    ("The yellow Sun Lamp costs 64 dollars.", ("Sun Lamp", 64, "yellow")),
    ("For 15.75 you get the orange Fox Mug.", ("Fox Mug", 15.75, "orange")),
    ("The silver Metro Watch is on sale at 120.", ("Metro Watch", 120, "silver")),
    ("Pink Cotton Socks: 8.99 a pair.", ("Cotton Socks", 8.99, "pink")),
    ("The grey Desk Organizer costs 22 dollars.", ("Desk Organizer", 22, "grey")),
]
TOOL_TASKS = [
    ("What's the weather like in Tokyo right now?", ("get_weather", {"city": "Tokyo"})),
    ("Is it raining in London today?", ("get_weather", {"city": "London"})),
    ("Tell me the weather in Nairobi.", ("get_weather", {"city": "Nairobi"})),
    ("How warm is it in Rome?", ("get_weather", {"city": "Rome"})),
    ("Convert 100 USD to EUR.", ("convert_currency", {"amount": 100, "from_currency": "USD", "to_currency": "EUR"})),
    ("How much is 250 GBP in JPY?", ("convert_currency", {"amount": 250, "from_currency": "GBP", "to_currency": "JPY"})),
    ("Change 40 EUR into CHF please.", ("convert_currency", {"amount": 40, "from_currency": "EUR", "to_currency": "CHF"})),
    ("I need 75 CAD converted to USD.", ("convert_currency", {"amount": 75, "from_currency": "CAD", "to_currency": "USD"})),
    ("Remind me to call mom at 6pm.", ("set_reminder", {"task": "call mom", "time": "6pm"})),
    ("Set a reminder to water the plants at 9am.", ("set_reminder", {"task": "water the plants", "time": "9am"})),
    ("Please remind me to buy milk at 5pm.", ("set_reminder", {"task": "buy milk", "time": "5pm"})),
    ("Remind me to take my pills at 8am.", ("set_reminder", {"task": "take my pills", "time": "8am"})),
]


def tasks() -> list[dict[str, Any]]:
    out = []
    for i, (text, (name, age, city)) in enumerate(CONTACTS):
        out.append({"id": f"contact-{i}", "kind": "extract", "schema": Contact, "text": text,
                    "expected": {"name": name, "age": age, "city": city}})
    for i, (text, (name, price, color)) in enumerate(PRODUCTS):
        out.append({"id": f"product-{i}", "kind": "extract", "schema": Product, "text": text,
                    "expected": {"name": name, "price": price, "color": color}})
    for i, (text, (tool, args)) in enumerate(TOOL_TASKS):
        out.append({"id": f"tool-{i}", "kind": "tool", "text": text, "expected": {"tool": tool, **args}})
    return out


SPECS = [ToolSpec(name, TOOL_DOCS[name], model.model_json_schema()) for name, model in TOOLS.items()]


def messages(task: dict[str, Any]) -> list[dict[str, str]]:
    if task["kind"] == "tool":
        return [{"role": "system", "content": tools_prompt(SPECS, "any")},
                {"role": "user", "content": task["text"]}]
    fields = ", ".join(task["schema"].model_fields)
    return [{"role": "user", "content": f"Extract {fields} as a JSON object from this text: {task['text']}"}]


def response_format(task: dict[str, Any]) -> ResponseFormat:
    if task["kind"] == "tool":
        return tool_call_format(SPECS, "any")
    return ResponseFormat.json_schema(task["schema"])


_VALUES = re.compile(r'"(?:[^"\\]|\\.)*"?|-?\d+(?:\.\d+)?')


def grounded(prompt: str, text: str) -> float:
    """Share of the answer's values (strings after a ':' and numbers; a value cut short by the
    rollout counts by what it has) found in the user's text, case-insensitively. 1.0 when none yet."""
    source = prompt.lower()
    values = []
    for part in re.split(r'":\s*', text)[1:]:  # what follows each key
        m = _VALUES.match(part)
        if m:
            v = m.group(0).strip('"').lower()
            if v:
                values.append(v)
    if not values:
        return 1.0
    return sum(v in source for v in values) / len(values)


METHODS = {
    "greedy": dict(beam_width=1, top_k=1, lookahead=0),
    "constrained greedy": dict(beam_width=1, top_k=1, lookahead=0),
    "deal": dict(beam_width=2, top_k=3, lookahead=4),
}


def run(method: str, todo: list[dict[str, Any]], max_new_tokens: int) -> list[dict[str, Any]]:
    engine = get_engine()
    cfgs = [SearchConfig(**METHODS[method], max_new_tokens=max_new_tokens,
                         response_format=None if method == "greedy" else response_format(t)) for t in todo]
    rewards = grounded if method == "deal" else None
    rows = []
    # One search per task, submitted together: the engine batches their steps.
    import concurrent.futures as cf
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=len(todo)) as pool:
        results = list(pool.map(lambda tc: engine.search(messages(tc[0]), rewards, tc[1]), zip(todo, cfgs)))
    wall = time.perf_counter() - t0
    for task, res in zip(todo, results):
        rows.append({"id": task["id"], "method": method, "text": res.text, **score(task, res.text),
                     "wall_s": wall / len(todo)})
    return rows


def _norm(v: Any) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return round(float(v), 4)
    if isinstance(v, str):
        try:
            return round(float(v), 4)
        except ValueError:
            return re.sub(r"\s+", " ", v.strip().strip(".").lower())
    return v


def score(task: dict[str, Any], text: str) -> dict[str, Any]:
    expected = task["expected"]
    data: dict[str, Any] | None = None
    schema_ok = False
    if task["kind"] == "tool":
        _, calls = parse_tool_calls(text)
        if calls:
            call = calls[0]
            data = {"tool": call["name"], **call["arguments"]}
            model = TOOLS.get(call["name"])
            if model is not None:
                try:
                    model.model_validate(call["arguments"])
                    schema_ok = set(call["arguments"]) <= set(model.model_fields)
                except ValidationError:
                    pass
    else:
        start, end = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[start: end + 1]) if start >= 0 else None
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            try:
                task["schema"].model_validate(data)
                schema_ok = True
            except ValidationError:
                pass
        else:
            data = None
    correct = sum(data is not None and _norm(data.get(k)) == _norm(v) for k, v in expected.items())
    return {"valid_json": data is not None, "schema_valid": schema_ok, "fields": len(expected),
            "fields_correct": correct}


def report(write: bool) -> str:
    rows = [json.loads(line) for p in sorted(OUT.glob("*.jsonl")) for line in p.read_text().splitlines() if line]
    lines = ["| method | tasks | valid JSON | schema-valid | field accuracy | extraction acc. | tool acc. |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        n = len(rs)

        def acc(keep, rs=rs):
            chosen = [r for r in rs if keep(r)]
            return sum(r["fields_correct"] for r in chosen) / max(sum(r["fields"] for r in chosen), 1)

        lines.append(f"| {method} | {n} | {sum(r['valid_json'] for r in rs) / n:.0%} | "
                     f"{sum(r['schema_valid'] for r in rs) / n:.0%} | {acc(lambda r: True):.3f} | "
                     f"{acc(lambda r: not r['id'].startswith('tool')):.3f} | {acc(lambda r: r['id'].startswith('tool')):.3f} |")
    table = "\n".join(lines)
    if write:
        text = RESULTS.read_text()
        block = f"{BEGIN}\n{table}\n{END}"
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        RESULTS.write_text(text)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "report"])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--limit", type=int, default=None, help="first N tasks only")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--write", action="store_true", help="report: write the table into RESULTS.md")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(report(args.write))
        return
    todo = tasks()[: args.limit]
    OUT.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        t0 = time.perf_counter()
        rows = run(method, todo, args.max_new_tokens)
        path = OUT / f"{method.replace(' ', '_')}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{method}: {len(rows)} tasks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(report(False))


if __name__ == "__main__":
    main()
