"""Running the command learner's program: its own process group, a timeout, logs kept on disk.

:func:`run_logged` starts the program with its stdout and stderr written to ``stdout.log`` and
``stderr.log`` of the run folder, waits at most ``timeout_s``, and on a timeout or an interrupt
kills the program *and whatever it started* (its process group, started with
``start_new_session``). A program that fails is reported with its exit status (or signal) and
the last lines of its stderr (of its stdout when stderr is empty).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from alloop.errors import LearnerError

logger = logging.getLogger(__name__)

__all__ = ["STDERR_LINES", "run_logged"]

#: Lines of the program's stderr (or stdout) quoted in the error when it fails.
STDERR_LINES = 20


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _stop(proc: subprocess.Popen) -> None:
    """Kill the command and whatever it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _failure(shown: str, code: int, seconds: float, out_log: Path, err_log: Path, run_dir: Path) -> LearnerError:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    tail = _tail(err_log, STDERR_LINES)
    tail = (
        f" Last lines of its stderr:\n{tail}\n"
        if tail.strip()
        else (" Its stderr is empty; last lines of its stdout:\n" + _tail(out_log, STDERR_LINES) + "\n")
    )
    return LearnerError(
        f"The training command {shown} {how} after {seconds:.1f} s.{tail}"
        f"(full logs and the inputs it got are in {run_dir})"
    )


def run_logged(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], run_dir: Path, timeout_s: float | None
) -> float:
    """Run ``argv`` to completion; the seconds it took.

    Parameters
    ----------
    argv : sequence of str
        The program and its arguments (no shell).
    cwd : Path
        Its working directory (must exist).
    env : mapping of str to str
        Its whole environment.
    run_dir : Path
        Receives ``stdout.log`` and ``stderr.log``; named in the messages.
    timeout_s : float or None
        Kill it (and its process group) after this many seconds; None: no limit.

    Raises
    ------
    LearnerError
        The program cannot be started (not found, not executable), runs past ``timeout_s``, or
        exits with a non-zero status (the message quotes the end of its stderr).
    """
    argv = list(argv)
    shown = shlex.join(argv)
    out_log, err_log = run_dir / "stdout.log", run_dir / "stderr.log"
    logger.info("running the training command in %s: %s", cwd, shown)
    start = time.perf_counter()
    with open(out_log, "wb") as out, open(err_log, "wb") as err:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise LearnerError(
                f"Cannot start the training command: program {argv[0]!r} "
                f"{'was not found' if isinstance(exc, FileNotFoundError) else 'cannot be executed'} "
                f"({exc.strerror}). Check `command` in the [learner] params: the program must be "
                f"on PATH or a path (relative paths start from {cwd})."
            ) from None
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise LearnerError(
                f"The training command {shown} did not finish within timeout_s = "
                f"{timeout_s:g} s and was stopped. Raise `timeout_s` in the [learner] "
                f"params if it needs longer. Its logs and inputs are in {run_dir}."
            ) from None
        finally:
            _stop(proc)  # also on KeyboardInterrupt: leave nothing running
    seconds = time.perf_counter() - start
    logger.debug("training command logs: %s, %s", out_log, err_log)
    if code != 0:
        raise _failure(shown, code, seconds, out_log, err_log, run_dir)
    logger.info("training command finished in %.1f s", seconds)
    return seconds
