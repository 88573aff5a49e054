"""Reliability summary: every bad input and how it is answered, the fuzz counts, and a kill
inside every AdvrBD stage followed by a re-run.

Usage: python benchmarks/reliability.py
Reuses the test suite's cases (tests/test_bad_input.py, tests/test_kill_resume.py) and the
last fuzz run (results/fuzz.json, from benchmarks/fuzz.py). Writes
benchmarks/results/reliability.{md,json}.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from _common import RESULTS, header, meta, write
from advrbd_plugin.report import markdown_table

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import test_bad_input as bad  # noqa: E402
import test_kill_resume as kill  # noqa: E402
from advrbd_plugin import cli  # noqa: E402
from advrbd_plugin.registry import DATASETS  # noqa: E402
from fixtures_toolboxes import toy_bundle  # noqa: E402


def bad_inputs(tmp: Path) -> list[dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    bundle = toy_bundle()
    DATASETS.register("bbtoy")(lambda root=None, download=False: bundle)
    cifar = toy_bundle(name="cifar10", classes=10, n_train=60, n_test=30)
    table = {**bad._dataset_cases(tmp), **bad._arrays_cases(tmp), **bad._backdoorbench_cases(tmp, bundle),
             **bad._toolbox_cases(tmp, cifar), **bad._config_cases(tmp)}
    if not torch.cuda.is_available():
        table["device cuda without a GPU"] = (["run", "--dataset", "digits", "--device", "cuda",
                                               "--out", str(tmp / "out-cuda"), "--quiet"], ["cuda"])
    rows, cwd = [], os.getcwd()
    os.chdir(tmp)
    try:
        for name, (argv, words) in table.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = cli.main(argv)
            text = err.getvalue().strip()
            rows.append({"case": name, "exit": code, "one_line": len(text.splitlines()) == 1,
                         "names_it": all(w in text for w in words), "message": text})
    finally:
        os.chdir(cwd)
        DATASETS.unregister("bbtoy")
    rows.append({"case": "payload executed by any of them", "exit": None, "one_line": None,
                 "names_it": None, "message": str((tmp / "PWNED").exists())})
    return rows


def kills(tmp: Path) -> list[dict]:
    ref_dir = tmp / "reference"
    kill._run(ref_dir)
    ref = kill._result(ref_dir)
    rows = []
    for stage, after in kill.KILL_AFTER.items():
        out = tmp / f"kill-{stage}"
        code, files = kill._run(out, after)
        killed = code != 0
        kill._run(out)
        got = kill._result(out)
        same = (got["metrics"] == ref["metrics"] and got["report"] == ref["report"]
                and all(torch.equal(got["state"][k], v) for k, v in ref["state"].items()))
        rows.append({"stage": stage, "killed": killed, "stage_files_at_kill": files,
                     "identical": same, "leftover_temps": got["temps"]})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = bad_inputs(Path(tmp) / "bad")
        killed = kills(Path(tmp) / "kill")
    fuzz = json.loads((RESULTS / "fuzz.json").read_text()) if (RESULTS / "fuzz.json").is_file() else None
    n_bad = len([r for r in inputs if r["exit"] is not None])
    info = meta("reliability.py", bad_inputs=inputs, kills=killed,
                fuzz={k: fuzz[k] for k in ("date", "total_inputs", "payload_ran")} if fuzz else None)
    ok = sum(1 for r in inputs if r["exit"] == 2 and r["one_line"] and r["names_it"])
    md = header("Reliability: bad inputs, fuzzing, kill and resume", info) + [
        f"## Bad inputs ({n_bad} tried): {ok} answered with exit code 2 and one line naming the "
        f"file or key; payload executed: {inputs[-1]['message']}", "",
        markdown_table(["case", "exit", "one line", "names it", "message"],
                       [[r["case"], r["exit"], r["one_line"], r["names_it"],
                         r["message"].replace("|", "/")[:220]] for r in inputs[:-1]]), "",
        "## Fuzzing", "",
        (f"{fuzz['total_inputs']} mutated inputs on {fuzz['date']} (`benchmarks/fuzz.py`, "
         f"`results/fuzz.md`): {sum(r['uncaught'] for r in fuzz['rows'])} uncaught exceptions, "
         f"payload executed: {fuzz['payload_ran']}.") if fuzz else "No fuzz run found.", "",
        f"## Kill (SIGKILL) inside each AdvrBD stage, then the same command again "
        f"(digits, smoke, 2 epochs, fp32, one thread)", "",
        markdown_table(["killed inside", "killed", "stage checkpoints at the kill", "result identical",
                        "leftover temp files"],
                       [[r["stage"], r["killed"], ", ".join(r["stage_files_at_kill"]) or "-",
                         r["identical"], len(r["leftover_temps"])] for r in killed])]
    write("reliability", "\n".join(md) + "\n", info, inputs + killed)


if __name__ == "__main__":
    main()
