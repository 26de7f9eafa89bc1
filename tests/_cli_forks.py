"""Many `sana-eval` command lines at the cost of one start: this interpreter imports the CLI once (torch and every
subcommand: seconds), then runs each command in a forked child as `python -m sana_eval` runs it (`sys.exit(main())`,
an uncaught exception printed with its traceback, exit 1), with its own working folder, stdout and stderr files and
exit status, `PARALLEL` children at a time.

    python tests/_cli_forks.py CASES.json RESULTS.json

CASES.json: [{"argv": [...], "cwd": DIR, "stdout": FILE, "stderr": FILE}, ...]; RESULTS.json: their exit statuses
(a negative one: killed by that signal).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

from sana_eval.cli.main import main

PARALLEL = 8
TIMEOUT_S = 120.0   # a command that was not refused at once would generate or score: stopped, and reported


def child(case: dict) -> None:
    os.chdir(case["cwd"])
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["sana-eval", *case["argv"]]
    try:
        code = main(case["argv"])
    except SystemExit as exit_:   # argparse, as the interpreter reports it
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_all(cases: list[dict]) -> list[int]:
    codes: list[int | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}   # pid -> (case index, start)
    todo = list(range(len(cases)))
    while todo or running:
        while todo and len(running) < PARALLEL:
            index = todo.pop(0)
            pid = os.fork()
            if pid == 0:
                child(cases[index])
            running[pid] = (index, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
            continue
        for pid, (_, start) in running.items():
            if time.monotonic() - start > TIMEOUT_S:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)
    return codes


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        all_cases = json.load(fh)
    with open(sys.argv[2], "w") as fh:
        json.dump(run_all(all_cases), fh)
