"""Compare YAML loaders for reading dumps: speed, memory and what they make of hostile input.

    make bench-yaml     # installs the candidates into .venv, then runs this

For a synthetic `kubectl get -o yaml` List of N applications (55 objects each), each loader
parses the file in a process of its own (wall time, peak RSS of that process); then each is
asked the questions that decided the choice (see README "Choosing the YAML loader"):
does an unquoted `2020-02-30` stay a string, is a duplicated key an error, can aliases be
refused, is deep nesting refused rather than a crash? A loader that is not installed is
listed as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

import synthetic
from machine import LoadSampler

# name -> (module, code that parses `text` into `docs`)
LOADERS: dict[str, tuple[str, str]] = {
    "yaml-rs (chosen)": ("yaml_rs", "docs = yaml_rs.loads(text, parse_datetime=False, "
                         "alias_limits=yaml_rs.AliasLimits(max_total_replayed_events=0))"),
    "PyYAML CSafeLoader": ("yaml", "docs = list(yaml.load_all(text, Loader=yaml.CSafeLoader))"),
    "fastyaml-rs": ("fast_yaml", "docs = list(fast_yaml.safe_load_all(text))"),
    "ryaml": ("ryaml", "docs = ryaml.loads(text)"),
    "rapidyaml (tree only)": ("ryml", "docs = ryml.parse_in_arena(text.encode())"),
}

QUESTIONS: dict[str, str] = {
    "2020-02-30 stays a string": "a: 2020-02-30\n",
    "duplicate key is an error": "a: 1\na: 2\n",
    "alias is refused": "a: &x [1]\nb: *x\n",
    "depth 2000 is refused": "a: " + "[" * 2000 + "]" * 2000 + "\n",
}

_CHILD = """
import resource, sys, time
{module_import}
text = open(sys.argv[1]).read()
start = time.perf_counter()
{parse}
elapsed = time.perf_counter() - start
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

_ASK = """
import json, sys
{module_import}
answers = {{}}
for name, text in json.loads(sys.argv[1]).items():
    try:
        {parse}
        value = docs[0] if isinstance(docs, list) else docs
        inner = value.get("a") if isinstance(value, dict) else None
        answers[name] = ["ok", type(inner).__name__]
    except BaseException as err:
        answers[name] = ["error", type(err).__name__]
print(json.dumps(answers))
"""


def verdict(question: str, outcome: str, detail: str) -> str:
    """What a loader's outcome on a question means for reading dumps."""
    if question.startswith("2020-02-30"):
        return "yes" if outcome == "ok" and detail == "str" else f"no ({detail})"
    if outcome == "error":
        return "crash (RecursionError)" if detail == "RecursionError" else "yes"
    return {"duplicate key is an error": "no (last wins)",
            "alias is refused": "no (expanded)"}.get(question, "no (parsed)")


def available(module: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                           check=False)
    return probe.returncode == 0


def parse_in_child(module: str, parse: str, path: Path) -> tuple[float, float]:
    code = _CHILD.format(module_import=f"import {module}", parse=parse)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def ask(module: str, parse: str) -> dict[str, str]:
    code = _ASK.format(module_import=f"import {module}", parse=parse)
    result = subprocess.run([sys.executable, "-c", code, json.dumps(QUESTIONS)],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        return dict.fromkeys(QUESTIONS, f"process died ({result.returncode})")
    outcomes: dict[str, list[str]] = json.loads(result.stdout)
    return {q: verdict(q, *outcomes[q]) for q in QUESTIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        objects: list[dict[str, Any]] = synthetic.mesh(args.apps, args.namespaces)
        with args.write.open("w") as out:
            yaml.dump({"apiVersion": "v1", "kind": "List", "items": objects}, out,
                      Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
        return
    with LoadSampler() as sampler, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mesh.yaml"
        # written by a child: on Linux a process's peak RSS is inherited by the children it
        # forks, so this one must stay small for theirs to mean anything
        subprocess.run([sys.executable, __file__, "--write", str(path), "--apps",
                        str(args.apps), "--namespaces", str(args.namespaces)], check=True)
        size = path.stat().st_size / 2**20
        count = path.read_text().count("\n- apiVersion: ")
        print(f"{count:,} objects, {size:.0f} MiB of YAML")
        print(f"{'loader':24} {'parse s':>8} {'peak MiB':>9}  " + " | ".join(QUESTIONS))
        for name, (module, parse) in LOADERS.items():
            if not available(module):
                print(f"{name:24} not installed")
                continue
            seconds, peak = parse_in_child(module, parse, path)
            answers = ask(module, parse)
            print(f"{name:24} {seconds:8.2f} {peak:9.0f}  "
                  + " | ".join(answers[q] for q in QUESTIONS))
    print(f"load average during the run: {sampler.summary()}")


if __name__ == "__main__":
    main()
