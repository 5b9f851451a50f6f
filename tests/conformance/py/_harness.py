"""Shared plumbing for the Python conformance scripts (hatchet-sdk==1.43.1).

The contract every script keeps, for the Rust integration tests that run it:
- configuration comes only from env (HATCHET_CLIENT_TOKEN, HATCHET_CLIENT_TLS_STRATEGY,
  optionally HATCHET_CLIENT_NAMESPACE), progress goes to stderr;
- stdout carries exactly one line, `ADZE-RESULT <json>` (or `READY` for worker_slots.py).
  The SDK logs to stdout, so `Stdout.claim()` keeps the real stdout for that line and
  points file descriptor 1 at stderr for everything else, child processes included;
- exit 0 only if every check passed; a deadline (ADZE_CONFORMANCE_TIMEOUT_S, default 55 s)
  ends a script that hangs, with a failing ADZE-RESULT.

`InProcessWorker` runs a `hatchet.worker(...)` on its own thread and event loop, so the
script's client and its tasks share the process (tasks can count their calls), and stops it
the way SIGTERM would: `Worker.exit_gracefully()`, which PATCHes the worker as paused on
the engine, drains running tasks, closes the listener and unsubscribes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import AsyncGenerator, Callable
from typing import Any

from hatchet_sdk import Hatchet

RESULT_PREFIX = "ADZE-RESULT"


def log(message: str) -> None:
    print(f"[conformance {os.path.basename(sys.argv[0])}] {message}", file=sys.stderr, flush=True)


class Stdout:
    """The process's real stdout, kept apart from everything the SDK prints."""

    _fd: int | None = None

    @classmethod
    def claim(cls) -> None:
        if cls._fd is not None:
            return
        sys.stdout.flush()
        cls._fd = os.dup(1)
        os.dup2(2, 1)

    @classmethod
    def write_line(cls, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        fd = cls._fd if cls._fd is not None else 1
        while data:
            written = os.write(fd, data)
            data = data[written:]


class Checks:
    """Named checks and observations; becomes the ADZE-RESULT line."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.results: dict[str, bool] = {}
        self.failures: list[str] = []
        self.observed: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._finished = False

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        with self._lock:
            self.results[name] = bool(ok)
            if not ok:
                self.failures.append(f"{name}: {detail}" if detail else name)
        log(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok or not detail else ': ' + detail}")
        return bool(ok)

    def expect_equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.check(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    def observe(self, key: str, value: Any) -> None:
        with self._lock:
            self.observed[key] = value

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.results)

    def finish(self, extra_failure: str | None = None) -> int:
        """Print the one ADZE-RESULT line (once) and return the exit code."""
        with self._lock:
            if self._finished:
                return 0 if self.ok else 1
            self._finished = True
            if extra_failure:
                self.failures.append(extra_failure)
            body = {
                "ok": not self.failures and bool(self.results),
                "script": self.script,
                "checks": self.results,
                "failures": self.failures,
                "observed": self.observed,
            }
            Stdout.write_line(f"{RESULT_PREFIX} {json.dumps(body, default=str, sort_keys=True)}")
        code = 0 if body["ok"] else 1
        log("all checks passed" if code == 0 else "FAILED: " + "; ".join(self.failures))
        return code


def start_deadline(checks: Checks, on_timeout: Callable[[], None] | None = None) -> None:
    """End the process with a failing ADZE-RESULT if the script is still running then."""
    seconds = float(os.environ.get("ADZE_CONFORMANCE_TIMEOUT_S", "55"))

    def expire() -> None:
        try:
            if on_timeout is not None:
                on_timeout()
        finally:
            checks.finish(f"deadline: the script did not finish within {seconds:.0f} s")
            os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class SdkLogCapture(logging.Handler):
    """Keeps the hatchet logger's messages, to tell how the graceful stop went."""

    # hatchet_sdk 1.43.1 Worker._pause_task_assignment logs exactly this once the
    # PATCH /api/v1/workers/{id} {"isPaused": true} succeeded.
    PAUSED = "task assignment paused"

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            self.messages.append(message)
            if record.levelno >= logging.ERROR:
                self.errors.append(message.splitlines()[0] if message else record.levelname)
        except Exception:  # noqa: BLE001 - a log line must never break the script
            pass

    @property
    def paused(self) -> bool:
        return any(m == self.PAUSED for m in self.messages)

    def pause_problems(self) -> list[str]:
        keys = ("pausing task assignment;", "could not read worker_id")
        return [m for m in self.messages if any(k in m for k in keys)]


def capture_sdk_logs() -> SdkLogCapture:
    handler = SdkLogCapture()
    logging.getLogger("hatchet").addHandler(handler)
    return handler


class InProcessWorker:
    """A hatchet worker on a background thread with its own event loop.

    Must be constructed on the main thread: the SDK installs its signal handlers there.
    """

    def __init__(
        self,
        hatchet: Hatchet,
        name: str,
        workflows: list[Any],
        slots: int = 4,
        labels: dict[str, str | int] | None = None,
        durable_slots: int | None = None,
    ) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker_id: str | None = None
        self.start_error: BaseException | None = None
        self.exited = threading.Event()

        async def lifespan() -> AsyncGenerator[None, None]:
            # Runs on the worker's loop once it registered its workflows and passed the
            # version check: the public way to learn which loop to stop it on.
            self._loop = asyncio.get_running_loop()
            yield None

        self.worker = hatchet.worker(
            name,
            slots=slots,
            durable_slots=durable_slots,
            workflows=workflows,
            lifespan=lifespan,
            labels=labels,
        )
        self._thread = threading.Thread(target=self._run, name="hatchet-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.start()
        except SystemExit:
            pass  # Worker.start() ends with sys.exit(0); a failed registration with sys.exit(1)
        except BaseException as e:  # noqa: BLE001 - reported by wait_registered / stop
            self.start_error = e
            log("worker failed: " + "".join(traceback.format_exception(e)))
        finally:
            self.exited.set()

    def start(self) -> InProcessWorker:
        self._thread.start()
        return self

    def wait_registered(self, timeout: float = 20.0) -> str:
        """The worker id the engine assigned, once `Dispatcher.Register` answered."""
        # hatchet_sdk 1.43.1: the listener subprocess puts the id it got from Register on
        # Worker._worker_id_queue; the worker reads it back when it pauses itself on stop,
        # so it is put back after reading.
        ids: Any = self.worker._worker_id_queue  # noqa: SLF001 - no public signal exists
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited.is_set():
                cause = f" ({self.start_error!r})" if self.start_error else ""
                raise RuntimeError(
                    f"the worker stopped before it registered{cause}: PutWorkflow, GetVersion "
                    "or Register failed; the SDK's log is on stderr"
                )
            try:
                worker_id = ids.get(timeout=0.25)
            except queue.Empty:
                continue
            ids.put(worker_id)
            self.worker_id = str(worker_id)
            return self.worker_id
        raise TimeoutError(f"the worker did not register within {timeout:.0f} s")

    def stop(self, timeout: float = 25.0) -> dict[str, Any]:
        """Stop as on SIGTERM; report what happened."""
        started = time.monotonic()
        # The lifespan hook gave the loop; Worker._loop is the same one, set earlier.
        loop = self._loop or self.worker._loop  # noqa: SLF001
        if loop is not None and not self.exited.is_set():
            asyncio.run_coroutine_threadsafe(self.worker.exit_gracefully(), loop)
        self.exited.wait(timeout)
        listener = self.worker._action_listener_process  # noqa: SLF001
        if listener is not None:
            listener.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
        return {
            "worker_thread_stopped": self.exited.is_set(),
            "listener_process_exit_code": None if listener is None else listener.exitcode,
            "stop_seconds": round(time.monotonic() - started, 2),
        }

    def kill(self) -> None:
        listener = self.worker._action_listener_process  # noqa: SLF001
        if listener is not None and listener.is_alive():
            listener.kill()


def check_clean_stop(
    checks: Checks, worker: InProcessWorker, stopped: dict[str, Any], sdk_logs: SdkLogCapture
) -> None:
    """The shutdown checks; only meaningful for a worker that registered."""
    checks.observe("stop", stopped)
    if sdk_logs.errors:
        checks.observe("sdk_errors", sdk_logs.errors[-5:])
    if worker.worker_id is None:
        return
    checks.check(
        "worker paused on the engine at shutdown (PATCH /api/v1/workers/{id})",
        sdk_logs.paused,
        "; ".join(sdk_logs.pause_problems()) or "the SDK never logged 'task assignment paused'",
    )
    checks.check(
        "worker stopped cleanly",
        stopped["worker_thread_stopped"] and stopped["listener_process_exit_code"] == 0,
        f"worker thread stopped={stopped['worker_thread_stopped']}, "
        f"listener process exit code={stopped['listener_process_exit_code']}",
    )


def client(script: str) -> Hatchet:
    """`Hatchet()` from env; a script that cannot even build it fails with a clear line.

    Scripts call this at import time, because their workflows are declared at module level
    (the SDK's listener subprocess is spawned and re-imports the script's module).
    """
    token = os.environ.get("HATCHET_CLIENT_TOKEN", "")
    problem = None
    if not token:
        problem = "HATCHET_CLIENT_TOKEN is not set"
    elif not token.startswith("ey"):
        problem = "HATCHET_CLIENT_TOKEN does not look like a JWT (it must start with 'ey')"
    else:
        try:
            return Hatchet()
        except Exception as e:  # noqa: BLE001 - reported as the script's result
            problem = f"cannot configure the Hatchet client from env: {type(e).__name__}: {e}"
    Stdout.claim()
    sys.exit(Checks(script).finish(problem))


def run_with_worker(
    script: str,
    hatchet: Hatchet,
    worker_name: str,
    workflows: list[Any],
    body: Callable[[Checks], None],
    slots: int = 4,
    labels: dict[str, str | int] | None = None,
    durable_slots: int | None = None,
) -> int:
    """A script's whole life: claim stdout, start an in-process worker serving
    `workflows`, run `body`'s checks once it registered, stop the worker as on SIGTERM
    and check that it stopped cleanly; every error becomes a failed check. Returns the
    exit code, after printing the one ADZE-RESULT line."""
    Stdout.claim()
    checks = Checks(script)
    sdk_logs = capture_sdk_logs()
    worker = InProcessWorker(
        hatchet, worker_name, workflows, slots=slots, labels=labels, durable_slots=durable_slots
    )
    start_deadline(checks, on_timeout=worker.kill)
    worker.start()
    try:
        checks.observe("worker_id", worker.wait_registered())
        checks.check("worker registered", True)
        body(checks)
    except Exception as e:  # noqa: BLE001 - every failure becomes a failed check
        log(traceback.format_exc())
        checks.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        log("stopping the worker")
        check_clean_stop(checks, worker, worker.stop(), sdk_logs)
    return checks.finish()
