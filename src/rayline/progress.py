"""What a person sees while a run goes: stage lines, live epochs and sweeps; the rest to a file.

By default a command prints one line per stage as it starts and as it ends, the epochs of a
training stage as they finish, a sweep's progress (``rayline.sweep``), errors, and at the
end the summary. Everything else that Ray, Ray Data, Tune, MLflow and other libraries write
goes to ``<run_dir>/ray.log``; with ``-v`` it is shown as well.

:func:`console` does it with two things, undone when the command ends:

* logging: the root logger gets a console handler (rayline's progress loggers, rayline's
  warnings, anyone's errors; everything with ``-v``) and a handler into the log file;
* ``sys.stdout`` / ``sys.stderr`` are replaced by a :class:`Capture` that writes into the
  log file, so the output of libraries that print or log through their own handlers
  (Ray's worker and raylet lines, Tune, Ray Train, MLflow, Python warnings) lands there.
  A captured line that reads as an error (``ERROR``, ``CRITICAL``, a traceback) is passed
  on to the console. rayline's own output goes to the real streams
  (:attr:`Console.out`, :attr:`Console.err`).

Until a run directory is known (:meth:`Console.stage_started` sees the first stage) the
captured text is kept in memory, then written at the top of the file.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

#: Stage, epoch and sweep lines; shown by default.
PROGRESS = "rayline.progress"
CONSOLE_LOGGERS = (PROGRESS, "rayline.sweep")
LOG_FILE = "ray.log"
_BUFFER_LIMIT = 8 * 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|Traceback \(most recent call last\)")

log = logging.getLogger(PROGRESS)
_active: Capture | None = None


def line(stage: str, text: str) -> str:
    """``<stage, padded>  <text>``: the columns of every stage line."""
    return f"{stage:<15} {text}"


def capturing() -> bool:
    """Whether a command's output is being captured (Ray should then stream worker logs)."""
    return _active is not None


class Capture(io.TextIOBase):
    """A text stream in place of ``sys.stdout``/``sys.stderr``: into the log file.

    ``tee``: everything is also written to ``console`` (``-v``); otherwise only lines that
    read as errors, and the traceback lines after them.
    """

    def __init__(self, console: TextIO, tee: bool):
        super().__init__()
        self.console = console
        self.tee = tee
        self.path: str | None = None
        self._file: TextIO | None = None
        self._buffer: list[str] = []
        self._buffered = 0
        self._pending = ""
        self._in_traceback = False
        self._lock = threading.RLock()

    # -- io.TextIOBase ------------------------------------------------------------------------
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.console.fileno()

    @property
    def buffer(self) -> _Bytes:
        """For code that writes bytes to ``sys.stdout.buffer``."""
        return _Bytes(self)

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            text = str(text)
        with self._lock:
            self.to_file(text)
            if self.tee:
                self._console(text)
            else:
                self._pass_errors(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                except (OSError, ValueError):
                    pass
        try:
            self.console.flush()
        except (OSError, ValueError):
            pass

    # -- the file -----------------------------------------------------------------------------
    def to_file(self, text: str) -> None:
        """Write into the log file (or the buffer, before there is one); never the console."""
        text = _ANSI.sub("", text)  # Ray colours its worker and raylet prefixes
        with self._lock:
            if self._file is not None:
                try:
                    self._file.write(text)
                except (OSError, ValueError):
                    pass
            elif self._buffered < _BUFFER_LIMIT:
                self._buffer.append(text)
                self._buffered += len(text)

    def attach(self, path: str) -> None:
        """Start writing into ``path`` (appended to: a resumed run keeps its earlier log)."""
        with self._lock:
            if self._file is not None:
                return
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
            self.path = path
            self._file.write("".join(self._buffer))
            self._buffer, self._buffered = [], 0

    def close_file(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None

    # -- the console --------------------------------------------------------------------------
    def _console(self, text: str) -> None:
        try:
            self.console.write(text)
        except (OSError, ValueError):
            pass

    def _pass_errors(self, text: str) -> None:
        self._pending += text
        if "\n" not in self._pending:
            if len(self._pending) > 65536:  # a progress bar redrawn with \r: never a line
                self._pending = self._pending[-4096:]
            return
        *lines, self._pending = self._pending.split("\n")
        for ln in lines:
            if _ERROR.search(ln):
                self._in_traceback = "Traceback" in ln
                self._console(ln + "\n")
            elif self._in_traceback:
                self._console(ln + "\n")
                # The exception's own line (not indented) ends the traceback.
                self._in_traceback = ln[:1].isspace() or not ln.strip()


class _Bytes:
    def __init__(self, capture: Capture):
        self.capture = capture

    def write(self, data: bytes) -> int:
        self.capture.write(bytes(data).decode("utf-8", errors="replace"))
        return len(data)

    def flush(self) -> None:
        self.capture.flush()


class _FileStream:
    """The log file as a stream for a logging handler."""

    def __init__(self, capture: Capture):
        self.capture = capture

    def write(self, text: str) -> None:
        self.capture.to_file(text)

    def flush(self) -> None:
        pass


class _ConsoleFilter(logging.Filter):
    """Default: progress lines, rayline's warnings, anyone's errors. Verbose: all of it."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or self.verbose:
            return True
        if record.name in CONSOLE_LOGGERS or record.name.startswith(PROGRESS + "."):
            return True
        ours = record.name == "rayline" or record.name.startswith("rayline.")
        return ours and record.levelno >= logging.WARNING


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose
        self.plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.name in CONSOLE_LOGGERS and record.levelno == logging.INFO:
            return f"[rayline] {record.getMessage()}"
        if (record.name == "rayline" or record.name.startswith("rayline.")) and not self.verbose:
            return f"[rayline] {record.levelname.lower()}: {record.getMessage()}"
        return self.plain.format(record)


class Console:
    """The command's real streams, the log file, and the stage-line callbacks."""

    def __init__(self, out: TextIO, err: TextIO, capture: Capture):
        self.out = out
        self.err = err
        self.capture = capture

    @property
    def log_path(self) -> str | None:
        """The log file, once a run directory is known."""
        return self.capture.path

    def attach(self, run_dir: str | os.PathLike) -> str:
        """Write the captured output to ``<run_dir>/ray.log`` from now on; return its path."""
        self.capture.attach(str(Path(run_dir) / LOG_FILE))
        return str(self.capture.path)

    def stage_started(self, name: str, run: Any) -> None:
        """``Run.on_stage_start``: the log file goes next to the run, then a start line."""
        if self.capture.path is None and getattr(run, "local_dir", None) is not None:
            self.attach(run.local_dir)
        log.info(line(name, "started"))

    def stage_done(self, timing: Any) -> None:
        """``Run.on_stage``: the stage's end line."""
        log.info(line(timing.name, f"{timing.seconds:6.1f}s  {timing.label}"))


def quiet_libraries() -> None:
    """Settings, before the libraries are imported, that keep progress bars out of the log."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@contextmanager
def console(verbose: bool = False, tee: bool | None = None) -> Iterator[Console]:
    """Route a command's output as the module docstring says; restore everything after.

    Args:
        verbose: Show everything (rayline's INFO logs, library warnings, Ray's output).
        tee: Show the captured library output as well (default: ``verbose``).
    """
    global _active
    out, err = sys.stdout, sys.stderr
    capture = Capture(err, verbose if tee is None else tee)
    if not verbose:
        quiet_libraries()
    root = logging.getLogger()
    rayline_logger = logging.getLogger("rayline")
    saved = (root.level, rayline_logger.level, rayline_logger.propagate)
    on_console = logging.StreamHandler(err)
    on_console.addFilter(_ConsoleFilter(verbose))
    on_console.setFormatter(_ConsoleFormatter(verbose))
    in_file = logging.StreamHandler(_FileStream(capture))  # type: ignore[arg-type]
    in_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(on_console)
    root.addHandler(in_file)
    root.setLevel(logging.INFO)
    rayline_logger.setLevel(logging.INFO)
    rayline_logger.propagate = True
    logging.captureWarnings(True)
    previous = _active
    _active = capture
    sys.stdout = sys.stderr = capture
    try:
        yield Console(out, err, capture)
    finally:
        flush_ray_worker_logs()
        sys.stdout, sys.stderr = out, err
        _active = previous
        logging.captureWarnings(False)
        root.removeHandler(on_console)
        root.removeHandler(in_file)
        root.setLevel(saved[0])
        rayline_logger.setLevel(saved[1])
        rayline_logger.propagate = saved[2]
        capture.flush()
        capture.close_file()


def flush_ray_worker_logs() -> None:
    """Write out the worker log lines Ray's deduplicator still holds, into the capture.

    Ray holds repeated worker lines back ("[repeated 16x across cluster]") and prints them
    when the driver disconnects, at interpreter exit, to whatever ``sys.stdout`` is then:
    after the summary, on the console. Flushed here, while the command's capture is still
    in place, they go to ``ray.log`` with the rest. (Ray's own flush at disconnect, in
    ``ray._private.worker.disconnect``; no public API does this.)
    """
    if "ray" not in sys.modules:
        return
    try:
        from ray._private import worker

        if not worker.global_worker.connected:
            return
        for dedup, sink in (
            (worker.stdout_deduplicator, sys.stdout),
            (worker.stderr_deduplicator, sys.stderr),
        ):
            for leftover in dedup.flush():
                worker.print_worker_logs(leftover, sink)
    except Exception:  # a Ray without these internals: its lines print at exit as before
        pass


# -- live epochs -------------------------------------------------------------------------------
def epoch_line(stage: str, row: dict[str, Any], epochs: int, metric: str) -> str:
    """``train  epoch 2/5  val_log_loss=0.4556  train_loss=0.5074``."""
    parts = [f"epoch {int(row.get('epoch', 0))}/{epochs}"]
    val = row.get(f"val_{metric}", row.get("val_metric"))
    if isinstance(val, int | float):
        parts.append(f"val_{metric}={val:.4f}")
    if isinstance(row.get("train_loss"), int | float):
        parts.append(f"train_loss={row['train_loss']:.4f}")
    if row.get("early_stopped"):
        parts.append("(early stop)")
    return line(stage, "  ".join(parts))


class EpochWatcher:
    """Prints each epoch file a training loop writes (``epoch-*.json``) as it appears.

    A driver-side thread polling a local directory; a file rewritten by a restarted attempt
    is printed again. Files there before the watch started are not.
    """

    def __init__(self, directory: str, epochs: int, metric: str, stage: str = "train",
                 interval: float = 0.5):  # fmt: skip
        self.directory = Path(directory)
        self.epochs, self.metric, self.stage, self.interval = epochs, metric, stage, interval
        self._seen: dict[str, int] = self._scan()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rayline-epochs", daemon=True)

    def _scan(self) -> dict[str, int]:
        try:
            return {
                p.name: p.stat().st_mtime_ns
                for p in self.directory.glob("epoch-*.json")
                if p.is_file()
            }
        except OSError:
            return {}

    def poll(self) -> None:
        """Print the epochs written since the last poll, in order."""
        import json

        for name, mtime in sorted(self._scan().items()):
            if self._seen.get(name) == mtime:
                continue
            try:
                row = json.loads((self.directory / name).read_text())
            except (OSError, ValueError):  # half-written: the next poll reads it
                continue
            self._seen[name] = mtime
            log.info(epoch_line(self.stage, row, self.epochs, self.metric))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # the live view must never stop training
                pass

    def __enter__(self) -> EpochWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if exc[0] is None:
            try:
                self.poll()  # the last epochs, before the stage's end line
            except Exception:
                pass


@contextmanager
def watch_epochs(directory: str, epochs: int, metric: str, stage: str = "train") -> Iterator[None]:
    """:class:`EpochWatcher` for a local directory; nothing for a URI (no polling a bucket)."""
    from rayline.paths import is_remote

    if is_remote(directory):
        yield
        return
    with EpochWatcher(directory, epochs, metric, stage):
        yield
