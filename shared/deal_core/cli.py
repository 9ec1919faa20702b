"""The ``deal`` command line: run a DeAL search, see what it did, manage the model cache.

    deal generate "Write a sentence about a dog in a park" --keywords dog,frisbee,park --length 12
    deal generate "..." --keywords a,b --compare-greedy --trace tree.html
    deal generate "..." --rubric "The reply is polite." --weight rubric=2 --json
    deal cache            # where the model cache is, and what it holds
    deal cache --clear    # delete it (asks first; --yes to skip)

Built on the engine's public API only (``get_engine``, ``SearchConfig``, the rewards,
``SearchResult``). Errors print one line and exit 1 (``--debug`` shows the traceback); a usage
mistake exits 2.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import ConfigError, DeALError
from .rewards import KeywordReward, LengthReward, Reward, as_reward

app = typer.Typer(
    name="deal",
    help="DeAL: decoding-time alignment. Search for text that scores well on your rewards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # our own one-line errors; --debug for tracebacks
    rich_markup_mode=None,
)

_REWARD_KINDS = ("keywords", "length", "rubric")


# ---- errors: one line, non-zero exit ------------------------------------------------------------
class _Fail(Exception):
    """Carries a message and exit code to :func:`main`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _guard(debug: bool, fn, *args: Any, **kwargs: Any) -> Any:
    """Run a command body; turn any error into one line on stderr and a non-zero exit."""
    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        typer.echo("deal: interrupted", err=True)
        raise typer.Exit(130) from None
    except BaseException as exc:  # noqa: BLE001 -- the CLI's job is to report, not to crash
        if debug:
            raise
        if isinstance(exc, DeALError):
            message = f"deal: error: {_one_line(str(exc))}"
        else:
            message = (f"deal: unexpected error: {type(exc).__name__}: {_one_line(str(exc))} "
                       "(run again with --debug for the traceback)")
        typer.echo(message, err=True)
        raise typer.Exit(1) from None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


# ---- rewards from flags ---------------------------------------------------------------------------
def parse_weights(weights: list[str], present: list[str]) -> dict[str, float]:
    """``--weight keywords=2`` (or a bare number when only one reward is given) -> {name: weight}."""
    out: dict[str, float] = {}
    for item in weights:
        name, sep, value = item.partition("=")
        if not sep:
            if not present:
                raise ConfigError(f"--weight {item!r}: there is no reward to weight; add --keywords, "
                                  "--length or --rubric")
            if len(present) != 1:
                raise ConfigError(
                    f"--weight {item!r}: name the reward (--weight keywords=2) when several are given"
                )
            name, value = present[0], item
        name = name.strip()
        if name not in _REWARD_KINDS:
            raise ConfigError(f"--weight {item!r}: unknown reward {name!r}; use one of {list(_REWARD_KINDS)}")
        if name not in present:
            raise ConfigError(f"--weight {item!r}: there is no --{name} reward to weight")
        try:
            w = float(value)
        except ValueError:
            raise ConfigError(f"--weight {item!r}: {value!r} is not a number") from None
        if not math.isfinite(w):
            raise ConfigError(f"--weight {item!r}: the weight must be finite")
        out[name] = w
    return out


def build_rewards(keywords: str | None, length: int | None, rubric: str | None,
                  weights: list[str]) -> list[tuple[Any, float]]:
    """The reward list the flags describe, as ``(reward, weight)`` pairs."""
    present = [k for k, v in (("keywords", keywords), ("length", length), ("rubric", rubric))
               if v is not None]
    w = parse_weights(weights, present)
    out: list[tuple[Any, float]] = []
    if keywords is not None:
        words = [k.strip() for k in keywords.split(",") if k.strip()]
        if not words:
            raise ConfigError("--keywords needs at least one word: --keywords dog,park")
        out.append((KeywordReward(words), w.get("keywords", 1.0)))
    if length is not None:
        if length < 1:
            raise ConfigError(f"--length is a target number of words >= 1, got {length}")
        out.append((LengthReward(length), w.get("length", 1.0)))
    if rubric is not None:
        out.append((_rubric_reward(rubric), w.get("rubric", 1.0)))
    return out


def _rubric_reward(text: str) -> Any:
    if not text.strip():
        raise ConfigError("--rubric needs some text: --rubric \"The reply is polite.\"")
    try:
        from .rewards.rubric import RubricReward
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("rewards.rubric"):
            raise ConfigError("--rubric is not available in this version of deal-align "
                              "(deal_core.rewards.rubric is missing)") from None
        raise ConfigError(f"--rubric needs the judge extra ({exc.name} is missing): "
                          "pip install 'deal-align[judge]'") from None
    return RubricReward(text)


# ---- progress -----------------------------------------------------------------------------------
class _Counted(Reward):
    """Wraps a reward to count the candidates it scores (for the live display); changes nothing."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner, self._counter = as_reward(inner), counter
        self.name, self.low, self.high = self._inner.name, self._inner.low, self._inner.high
        # An end-aware reward must stay end-aware: the search proposes "end here" candidates only
        # for those, and calls score_ended instead of score.
        self.end_aware = self._inner.end_aware

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        self._counter[0] += len(candidates)
        return self._inner.score(prompt, candidates)

    def score_ended(self, prompt: str, candidates: Sequence[str], ended: Sequence[bool]) -> list[float]:
        self._counter[0] += len(candidates)
        return self._inner.score_ended(prompt, candidates, ended)

    async def ascore(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        self._counter[0] += len(candidates)
        return await self._inner.ascore(prompt, candidates)

    def identity(self) -> str | None:
        return self._inner.identity()


@dataclass
class _Agreed:
    """What the progress line shows: the text every live beam agrees on, and its length in tokens."""

    text: str = ""
    tokens: int = 0


def _run_with_progress(engine, prompt: Any, rewards: list[tuple[Any, float]], config, *,
                       show: bool, console: Any = None) -> Any:
    """Search; while it runs, show tokens agreed / max, candidates scored and elapsed time.

    The display (stderr, only on a terminal unless forced) redraws on a timer so it keeps moving
    while beams disagree and no text is final yet. "Tokens agreed" counts the text every live beam
    shares. The result is the engine's own: the display only watches the stream of events.
    """
    if not show:
        return engine.search(prompt, rewards, config)
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    counter = [0]
    # Only the first reward counts: every reward sees the same candidates each step.
    counted = [(_Counted(r, counter), w) if i == 0 else (r, w) for i, (r, w) in enumerate(rewards)]
    state = _Agreed()
    t0 = time.perf_counter()

    def line() -> Text:
        tail = state.text.replace("\n", " ")[-60:]
        scored = f"{counter[0]} candidates scored" if rewards else "no rewards"
        return Text.assemble(("DeAL ", "bold"), f"{state.tokens}/{config.max_new_tokens} tokens agreed · ",
                             f"{scored} · {time.perf_counter() - t0:5.1f}s  ", (tail, "dim"))

    console = console or Console(stderr=True)
    result = None
    with Live(line(), console=console, transient=True, refresh_per_second=4) as live:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.25):
                live.update(line())

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            for item in engine.stream_events(prompt, counted, config):
                if isinstance(item, str):
                    state.text += item
                    state.tokens = len(engine.tokenizer(state.text, add_special_tokens=False)["input_ids"])
                    live.update(line())
                else:
                    result = item
        finally:
            stop.set()
            ticker.join()
    return result


# ---- generate ---------------------------------------------------------------------------------------
@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to ask. Sent as a chat user message unless --raw.")],
    keywords: Annotated[Optional[str], typer.Option(help="Reward: use these words, comma-separated.")] = None,
    length: Annotated[Optional[int], typer.Option(help="Reward: aim for this many words.")] = None,
    rubric: Annotated[Optional[str], typer.Option(help="Reward: a rubric in plain English, judged by a local LM.")] = None,
    fluency: Annotated[Optional[float], typer.Option(metavar="W", help="Reward: fluency of the text alone, with weight W (0.1 keeps --keywords from making word lists).")] = None,
    weight: Annotated[list[str], typer.Option(metavar="NAME=W", help="Weight of a reward: NAME=W (keywords, length, rubric); repeatable.")] = [],  # noqa: B006
    beam_width: Annotated[Optional[int], typer.Option(help="Hypotheses kept per step.")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Next tokens each beam proposes.")] = None,
    lookahead: Annotated[Optional[int], typer.Option(help="Greedy tokens rolled out before scoring.")] = None,
    commit_tokens: Annotated[Optional[int], typer.Option(help="Tokens committed per step.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 64,
    reward_scale: Annotated[Optional[float], typer.Option(help="lambda: rewards vs LM log-prob.")] = None,
    stop: Annotated[list[str], typer.Option(metavar="TEXT", help="Stop string; repeatable.")] = [],  # noqa: B006
    alignment_prompt: Annotated[Optional[str], typer.Option(help="System text prepended to the prompt.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed, for reproducible runs.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send the prompt as raw text, no chat template.")] = False,
    model: Annotated[str, typer.Option(help="'embedded' (SmolLM2-135M-Instruct), a local dir or HF id.")] = "embedded",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    base_url: Annotated[Optional[str], typer.Option(help="Search on an OpenAI-compatible server (vllm serve ...) at this API root, e.g. http://127.0.0.1:8000/v1; --model is the served name.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="DEAL_API_KEY", help="Bearer token for --base-url (env DEAL_API_KEY).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="With --base-url: the served model's tokenizer (local dir or HF id).")] = None,
    backend: Annotated[str, typer.Option(help="hf (transformers, default) or vllm (vLLM in this process).")] = "hf",
    compare_greedy: Annotated[bool, typer.Option("--compare-greedy", help="Also decode greedily and show both.")] = False,
    trace: Annotated[list[Path], typer.Option(metavar="FILE", help="Write the search tree: a .html, .png or .json file; repeatable.")] = [],  # noqa: B006
    top_n: Annotated[int, typer.Option(help="Candidates drawn per step in --trace pictures.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (no trace; see --trace x.json).")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Live progress (default: on a terminal).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Run a DeAL search and print the answer, each reward's value and the search statistics."""
    _guard(debug, _generate, **{k: v for k, v in locals().items() if k != "debug"})


def _generate(*, prompt: str, keywords, length, rubric, fluency, weight, beam_width, top_k, lookahead,
              commit_tokens, max_new_tokens, reward_scale, stop, alignment_prompt, seed, raw, model,
              device, backend, base_url, api_key, tokenizer, compare_greedy, trace, top_n, as_json,
              progress) -> None:
    from .config import SearchConfig, make_config
    from .engine import get_engine
    from .rewards import RewardSet

    rewards = build_rewards(keywords, length, rubric, weight)
    if fluency is not None and not (math.isfinite(fluency) and fluency > 0):
        raise ConfigError(f"--fluency is a weight > 0, got {fluency}")
    config = make_config(beam_width=beam_width, top_k=top_k, lookahead=lookahead,
                         commit_tokens=commit_tokens, max_new_tokens=max_new_tokens,
                         reward_scale=reward_scale, stop=stop or None,
                         alignment_prompt=alignment_prompt, seed=seed, trace=True)
    # Checked before the search: a long search should not end in "cannot write the file".
    if top_n < 1:
        raise ConfigError(f"--top-n is the number of candidates drawn per step, >= 1; got {top_n}")
    for target in trace:
        if target.is_dir():
            raise ConfigError(f"--trace {target}: that is a folder; give a file name in it, e.g. "
                              f"{target / 'tree.html'}")
        if target.suffix.lower() not in (".html", ".htm", ".png", ".json"):
            raise ConfigError(f"--trace {target}: use a .html, .png or .json file name")
        if not target.parent.is_dir():
            raise ConfigError(f"--trace {target}: the folder {target.parent} does not exist")
    if not prompt.strip():
        raise ConfigError("the prompt is empty; pass some text")
    the_prompt: Any = prompt if raw else [{"role": "user", "content": prompt}]
    show = sys.stderr.isatty() if progress is None else progress
    _quiet_loading()
    if base_url:
        engine = get_engine(None if model == "embedded" else model, base_url=base_url, api_key=api_key,
                            tokenizer=tokenizer)
    else:
        if backend not in ("hf", "vllm"):
            raise ConfigError(f"--backend {backend}: use hf or vllm")
        engine = get_engine(None if model == "embedded" else model, device, backend=backend)
    if fluency is not None:
        from .rewards.fluency import FluencyReward

        # Judged by the LM the search runs (on vLLM: the same weights, loaded by transformers).
        judge_lm = engine if backend == "hf" else (None if model == "embedded" else model)
        rewards.append((FluencyReward(judge_lm), fluency))
    result = _run_with_progress(engine, the_prompt, rewards, config, show=show)

    greedy = None
    if compare_greedy or trace:
        greedy = engine.search(the_prompt, config=SearchConfig.greedy(
            max_new_tokens, stop=stop or None, alignment_prompt=alignment_prompt, trace=False))
        if rewards:
            # Score greedy's answer once with the same rewards (not per step: a judge is costly).
            rs = RewardSet.from_spec(rewards)
            values = rs.evaluate(prompt, [greedy.text])[0]
            greedy = greedy.model_copy(update={"reward_scores": dict(zip(rs.names, values))})
    written, failures = [], []
    if trace:
        from .render import save_trace

        for target in trace:
            # A trace that cannot be written must not cost the answer, nor the other trace files.
            try:
                save_trace(result, target, prompt=the_prompt, greedy=greedy, config=config, top_n=top_n)
                written.append(target)
            except Exception as exc:  # noqa: BLE001 -- reported below, after the answer
                failures.append(f"--trace {target}: {type(exc).__name__}: {_one_line(str(exc))}")

    if as_json:
        out = {"model": engine.model_name, "config": config.model_dump(),
               **result.model_dump(mode="json", exclude={"trace"})}
        if compare_greedy and greedy is not None:
            out["greedy"] = greedy.model_dump(mode="json", exclude={"trace"})
        if trace:
            out["trace_files"] = [str(t) for t in written]
        # Strict JSON: a non-finite number (a -inf reward) is null, never the invalid `Infinity`.
        typer.echo(json.dumps(_finite(out), indent=2, default=_json_default, allow_nan=False))
    else:
        _print_human(result, greedy if compare_greedy else None, written)
    if failures:
        raise _TraceFailed("; ".join(failures) + " (the answer above is complete)")


def _quiet_loading() -> None:
    """No "Loading weights" bar from transformers: the CLI's output is the answer (and our own
    progress display); a load error still surfaces as one line."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 -- cosmetics only; never fail a run over a progress bar
        pass


def _json_default(x: Any) -> Any:
    return str(x)


def _finite(x: Any) -> Any:
    """``x`` with every NaN / infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class _TraceFailed(DeALError):
    """A --trace file could not be written (the answer was printed)."""


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "-inf" if x == -math.inf else f"{x:.3f}"


def _print_human(result, greedy, trace: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    if greedy is None:
        console.print(result.text, markup=False)
        console.print()
        if result.reward_scores:
            console.print("rewards: " + "  ".join(f"{k}={_fmt(v)}" for k, v in result.reward_scores.items()),
                          markup=False)
    else:
        table = Table(show_lines=True)
        table.add_column("")
        table.add_column("DeAL", overflow="fold")
        table.add_column("greedy", overflow="fold")
        table.add_row("text", result.text, greedy.text)
        for name, value in result.reward_scores.items():
            table.add_row(name, _fmt(value), _fmt(greedy.reward_scores.get(name)))
        table.add_row("log-prob", _fmt(result.logprob), _fmt(greedy.logprob))
        table.add_row("tokens", str(len(result.token_ids)), str(len(greedy.token_ids)))
        table.add_row("seconds", f"{result.stats.wall_seconds:.1f}", f"{greedy.stats.wall_seconds:.1f}")
        console.print(table)
    s = result.stats
    console.print(f"score {_fmt(result.score)} · log-prob {_fmt(result.logprob)} · finish {result.finish_reason}"
                  f" · {len(result.token_ids)} tokens", markup=False)
    console.print(f"stats: {s.steps} steps · {s.lm_forward_passes} LM forwards · {s.candidates_scored} "
                  f"candidates scored · {s.reward_calls} reward calls · {s.wall_seconds:.1f} s", markup=False)
    for target in trace:
        console.print(f"trace written to {target}", markup=False)


# ---- cache --------------------------------------------------------------------------------------------
def _cache_entries(root: Path) -> Iterator[tuple[str, Path, int]]:
    """(name, path, bytes) of everything cached: ``models/`` (converted LMs), ``gguf/`` (assembled
    judge files), ``heads/`` (trained reward heads) -- all rebuilt on next use.

    Hidden entries are skipped: ``.name.xyz`` folders are conversions in progress in another
    process, and deleting them under it would break that process.
    """
    if not root.is_dir():
        return
    for section in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(e for e in section.iterdir() if not e.name.startswith(".")):
            if entry.is_dir():
                size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            else:
                size = entry.stat().st_size
            yield f"{section.name}/{entry.name}", entry, size


@app.command()
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete everything cached (rebuilt on next use).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Show where the model cache is and what it holds; --clear deletes it (rebuilt on next use)."""
    _guard(debug, _cache, clear=clear, yes=yes, as_json=as_json)


def _cache(*, clear: bool, yes: bool, as_json: bool) -> None:
    from .models import cache_dir, stale_temp_dirs

    root = cache_dir()
    entries = list(_cache_entries(root))
    # Folders left by conversions that were killed mid-way (hundreds of MB each): listed and cleared
    # like the rest. Folders of conversions still running are never touched.
    entries += [(f"{p.parent.name}/{p.name} (interrupted conversion)", p,
                 sum(f.stat().st_size for f in p.rglob("*") if f.is_file())) for p in stale_temp_dirs(root)]
    total = sum(size for _, _, size in entries)
    if clear:
        if not entries:
            typer.echo(f"cache {root} is already empty")
            return
        if not yes:
            if sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty():  # closed: `<&-`
                raise ConfigError("refusing to delete the cache without confirmation; pass --yes")
            typer.confirm(f"delete {len(entries)} cached item(s), {_mb(total)}, under {root}?", abort=True)
        for _, entry, _ in entries:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        typer.echo(f"deleted {len(entries)} cached item(s), {_mb(total)}, from {root}")
        return
    if as_json:
        typer.echo(json.dumps({"path": str(root), "total_bytes": total,
                               "entries": [{"name": n, "bytes": s} for n, _, s in entries]}, indent=2))
        return
    typer.echo(f"cache: {root}")
    if not entries:
        typer.echo("  (empty: the embedded model is converted here on first use)")
    for name, _, size in entries:
        typer.echo(f"  {name}  {_mb(size)}")
    if entries:
        typer.echo(f"total {_mb(total)}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``deal``).

    Runs typer in non-standalone mode so that usage mistakes (an unknown option, a bad number) are
    reported like every other error: one line on stderr, exit status 2. ``deal`` with no arguments
    prints the help.
    """
    if sys.stdout is None or sys.stdout.closed:  # `deal ... >&-`: the answer would go nowhere
        print("deal: error: standard output is closed; nothing could be written (redirect it to a "
              "file instead)", file=sys.stderr)
        sys.exit(1)
    try:
        rv = app(args=list(argv) if argv is not None else None, prog_name="deal", standalone_mode=False)
        sys.stdout.flush()  # a write error (full disk, closed pipe) must not end in exit status 0
    except OSError as exc:  # BrokenPipeError, ENOSPC ... while flushing
        sys.stdout = None  # nothing more can be written there, not even at exit
        print(f"deal: error: could not write the output: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(1)
    except _usage_errors() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `deal` / `deal generate` alone: the help
            typer.echo(_usage_message(exc), err=True)
        else:
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path} --help" if ctx is not None else "deal --help"
            typer.echo(f"deal: error: {_one_line(_usage_message(exc))} (see {where})", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("deal: aborted", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


def _usage_message(exc: BaseException) -> str:
    """A usage error's message (typer's and click's exceptions both have ``format_message()``)."""
    format_message = getattr(exc, "format_message", None)
    return str(format_message()) if callable(format_message) else str(exc)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a usage mistake: typer >= 0.2x vendors click (``TyperException``);
    older typer raises click's own ``ClickException``."""
    kinds: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        kinds.append(typer.TyperException)
    try:
        import click

        kinds.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(kinds)


if __name__ == "__main__":
    main()
