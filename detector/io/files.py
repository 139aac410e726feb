"""File sources and sinks: JSON-lines logs in (plain, gzip, or standard input), JSON lines out.

A ``LineSource`` reads one file in chunks of whole lines, remembering line numbers so a rejected
line can be found again, how many blank lines it passed over, and how far it has read (for a
progress indicator). gzip is recognised by its magic bytes on any input, standard input included;
a UTF-8 byte-order mark is dropped. A gzip file that ends early or carries trailing garbage raises
``TruncatedInput`` naming the file and how many lines it gave, never a bare library error.

Outputs are written atomically: an ``OutputFile`` writes a temporary file in the target's own
directory and renames it over the target only on ``commit()`` (after an fsync), so a run that fails
leaves the previous output whole. Opening one creates the temporary file at once, so a missing
directory, a read-only mount or a path that is a directory fails before the first record is read.
``check_distinct`` refuses an output that is an input or another output (same resolved path or
same inode). Nothing here decides anything about records.
"""

from __future__ import annotations

import gzip
import os
import stat
import sys
import tempfile
import zlib
from pathlib import Path
from collections.abc import Sequence
from typing import Any, BinaryIO, cast

import orjson

from ..core.events import json_default

try:
    # ISA-L's inflate, the same gzip format at about twice zlib's speed (0.23 against 0.47 us a
    # line of a resolver log, measured): a replay of compressed logs spends less on reading.
    from isal import isal_zlib
    from isal.igzip import IGzipFile as _GzipReader
    # (isal's type stub declares ``error`` an instance: it is the exception class)
    _InflateError = cast(type[Exception], isal_zlib.error)
except ImportError:                 # (a platform without isal's wheels: the standard library)
    from gzip import GzipFile as _GzipReader  # type: ignore[assignment]
    _InflateError = zlib.error
#: What a broken gzip stream raises, whichever inflater reads it.
_GZIP_ERRORS = (EOFError, zlib.error, _InflateError, OSError)

#: Lines handed to the core per chunk: large enough to amortise per-batch work, small enough that
#: streams stay aligned in event time and memory stays flat.
CHUNK_LINES = 4096

BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
#: Encodings and compressions we recognise only to say we do not read them.
UNSUPPORTED = ((b"BZh", "bzip2-compressed"), (b"\xfd7zXZ\x00", "xz-compressed"),
               (b"\x28\xb5\x2f\xfd", "zstd-compressed"), (b"PK\x03\x04", "a zip archive"),
               (b"\xff\xfe", "UTF-16 text"), (b"\xfe\xff", "UTF-16 text"))


class InputError(Exception):
    """An input that cannot be read at all (the message names the file): a usage error."""


class TruncatedInput(Exception):
    """An input that broke off part-way (a truncated gzip, trailing garbage, a read error)."""

    def __init__(self, path: str, lines: int, what: str) -> None:
        super().__init__(f"{display(path)}: {what} after {lines:,} lines")
        self.path, self.lines, self.what = path, lines, what


class OutputError(Exception):
    """An output that cannot be written (the message names the option and the file)."""


def display(path: str) -> str:
    return "standard input" if path == "-" else path


class LineSource:
    """Chunks of non-blank lines of one file (gzip by its magic bytes, ``-`` for stdin).

    ``line_no`` counts the lines read so far, ``blank`` the blank ones among them (never handed
    out), so ``line_no == blank + lines handed out`` at the end.
    """

    def __init__(self, path: str, stream: str) -> None:
        self.path = path
        self.stream = stream
        self.line_no = 0
        self.blank = 0
        self.size = 0
        self.compressed = False
        self._consumed = 0                # bytes (decompressed) read so far
        self._broken: str | None = None   # what broke the input, once it did
        self._peeked: list[tuple[bytes, int]] = []
        self._raw: BinaryIO
        try:
            if path == "-":
                self._raw = sys.stdin.buffer
            else:
                self._raw = open(path, "rb")
                self.size = os.fstat(self._raw.fileno()).st_size
        except OSError as err:
            raise InputError(f"cannot read {display(path)}: {err.strerror}") from None
        self._file = self._raw
        head = self._head(self._raw)
        if head.startswith(GZIP_MAGIC):
            self.compressed = True
            self._file = _GzipReader(fileobj=self._raw, mode="rb")  # type: ignore[assignment]
            try:
                head = self._head(self._file)
            except _GZIP_ERRORS as err:
                self.close()
                raise InputError(f"{display(path)} starts like gzip but is not readable gzip "
                                 f"data ({err})") from None
        for magic, what in UNSUPPORTED:
            if head.startswith(magic):
                self.close()
                raise InputError(f"{display(path)} is {what}, which the detector does not read "
                                 "(give it as UTF-8 JSON lines, plain or gzip)")

    @staticmethod
    def _head(reader) -> bytes:
        peek = getattr(reader, "peek", None)
        return peek(8)[:8] if peek is not None else b""

    def peek(self, lines: int) -> list[bytes]:
        """The next ``lines`` non-blank lines, left to be read again by ``read_chunk``."""
        if not self._peeked:
            chunk, numbers = self._read(lines)
            self._peeked = list(zip(chunk, numbers))
        return [line for line, _ in self._peeked]

    def read_chunk(self, lines: int = CHUNK_LINES) -> tuple[list[bytes], list[int]]:
        """Up to ``lines`` non-blank lines and their 1-based line numbers; empty at the end."""
        if self._peeked:
            peeked, self._peeked = self._peeked, []
            return [line for line, _ in peeked], [number for _, number in peeked]
        return self._read(lines)

    def chunks(self, lines: int = CHUNK_LINES):
        """Every chunk to the end of the file: ``(lines, line numbers)`` pairs."""
        while True:
            chunk, numbers = self.read_chunk(lines)
            if not chunk:
                return
            yield chunk, numbers

    def _read(self, lines: int) -> tuple[list[bytes], list[int]]:
        # The lines readlines(hint) would return (lines average ~250 bytes): every line up to the
        # first whose newline is at or past the hint's byte. readlines() of a gzip file goes
        # through GzipFile.readline() in Python once per line; one read() plus one readline()
        # and a split in C read a gzip log at 0.8 instead of 1.0 us a line.
        hint = lines * 256
        if self._broken is not None:
            raise TruncatedInput(self.path, self.line_no, self._broken)
        try:
            data = self._file.read(hint)          # short only at the end of the input
            if len(data) == hint or not data.endswith(b"\n"):
                data += self._file.readline()     # to the end of the line the hint falls in
        except _GZIP_ERRORS as err:
            self._broken = _gzip_problem(err) if self.compressed else f"read error ({err})"
            data = self._salvage() if self.compressed and self.path != "-" else b""
            if not data:
                raise TruncatedInput(self.path, self.line_no, self._broken) from None
        self._consumed += len(data)
        if self.line_no == 0 and data.startswith(BOM):
            data = data[len(BOM):]
        raw = data.split(b"\n")
        if raw[-1] == b"":                    # the newline ending the last line, or no data
            raw.pop()
        first = self.line_no + 1
        self.line_no += len(raw)
        if b"\r" in data:
            raw = [line.rstrip(b"\r") for line in raw]
        if all(raw) and not any(map(bytes.isspace, raw)):
            return raw, list(range(first, first + len(raw)))     # no blank line: all kept
        chunk: list[bytes] = []
        numbers: list[int] = []
        for number, line in enumerate(raw, first):
            line = line.rstrip(b"\r\n")
            if line and not line.isspace():
                chunk.append(line)
                numbers.append(number)
        self.blank += len(raw) - len(chunk)
        if raw and not chunk:
            return self._read(lines)          # a run of blank lines: read on
        return chunk, numbers

    def _salvage(self) -> bytes:
        """The whole lines a broken gzip file still gives after what was read: the failed read
        lost them. The file is read again to there, then in small steps up to the break (all of
        it, for trailing garbage after the last member; a cut last line is left out)."""
        pieces = []
        try:
            with open(self.path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as again:
                remaining = self._consumed
                while remaining:
                    skipped = again.read(min(remaining, 1 << 20))
                    if not skipped:
                        return b""
                    remaining -= len(skipped)
                try:
                    while piece := again.read1(1 << 16):
                        pieces.append(piece)
                except (EOFError, zlib.error, OSError):
                    pass
        except (EOFError, zlib.error, OSError):
            return b""
        data = b"".join(pieces)
        return data[:data.rfind(b"\n") + 1]

    def position(self) -> int:
        """Bytes of the underlying file consumed so far (compressed bytes for gzip)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.path != "-":
            if self._file is not self._raw:
                self._file.close()
            self._raw.close()


def _gzip_problem(err: BaseException) -> str:
    """What went wrong inside a gzip stream, in an operator's words."""
    if isinstance(err, EOFError):
        return "truncated gzip"
    if isinstance(err, gzip.BadGzipFile):
        # "Not a gzipped file": bytes after the last member; else a member's CRC or length
        # check failed (its data was damaged).
        if str(err).startswith("Not a gzipped file"):
            return "trailing garbage (not gzip data)"
        return "corrupt gzip data (a CRC or length check failed)"
    if isinstance(err, (zlib.error, _InflateError)):
        return "corrupt gzip data"
    return f"read error ({err})"


class OutputFile:
    """A file written atomically: a temporary file beside ``path``, renamed over it on ``commit``.

    ``-`` is standard output, and a path that exists and is not a regular file (``/dev/null``, a
    named pipe) is written in place: neither can be replaced by a rename. ``option`` (``--out``)
    names the file in every error. ``abort()`` removes the temporary file, leaving ``path`` as it
    was.
    """

    def __init__(self, path: str | Path, option: str = "output") -> None:
        self.path = str(path)
        self.option = option
        self._temp: str | None = None
        self._file: BinaryIO
        if self.path == "-":
            self._file = sys.stdout.buffer
            return
        target = Path(self.path)
        try:
            mode = target.stat().st_mode
        except FileNotFoundError:
            mode = None
        except OSError as err:
            raise self._error(err) from None
        if mode is not None and stat.S_ISDIR(mode):
            raise OutputError(f"{option} {self.path}: is a directory")
        if mode is not None and not stat.S_ISREG(mode):
            try:                              # a device or a pipe: written in place
                self._file = open(self.path, "wb")
            except OSError as err:
                raise self._error(err) from None
            return
        directory = target.parent
        if not directory.is_dir():
            raise OutputError(f"{option} {self.path}: no such directory: {directory}")
        self._mode = stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask()
        try:
            handle, self._temp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.",
                                                  suffix=".tmp")
        except OSError as err:
            raise OutputError(f"{option} {self.path}: cannot write in {directory}: "
                              f"{err.strerror}") from None
        self._file = os.fdopen(handle, "wb")

    def _error(self, err: OSError) -> OutputError:
        return OutputError(f"{self.option} {self.path}: {err.strerror or err}")

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as err:
            raise self._error(err) from None

    def flush(self) -> None:
        """Everything written on its way to the disk (synced): the first half of ``commit``,
        so several outputs can fail before any of them replaces its file."""
        try:
            self._file.flush()
            if self._temp is not None:
                os.fsync(self._file.fileno())
        except OSError as err:
            self.abort()
            raise self._error(err) from None

    def commit(self) -> None:
        """Make the written data the file's content (flushed, synced, renamed into place)."""
        self.flush()
        try:
            if self._temp is None:
                if self.path != "-":
                    self._file.close()
                return
            self._file.close()
            os.chmod(self._temp, self._mode)
            os.replace(self._temp, self.path)
            self._temp = None
            _fsync_directory(Path(self.path).parent)
        except OSError as err:
            self.abort()
            raise self._error(err) from None

    def abort(self) -> None:
        """Forget what was written: the target stays as it was."""
        if self.path != "-":
            try:
                self._file.close()
            except OSError:
                pass
        if self._temp is not None:
            try:
                os.unlink(self._temp)
            except OSError:
                pass
            self._temp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


class JsonLinesSink:
    """JSON objects (dicts, or typed values such as ``AnomalyEvent``) as lines into an
    ``OutputFile`` (``-`` is stdout); ``close()`` commits."""

    def __init__(self, path: str | Path, option: str = "output") -> None:
        self.path = str(path)
        self.output = OutputFile(path, option)
        self.written = 0

    def write(self, obj: Any) -> None:
        self.output.write(orjson.dumps(obj, default=json_default) + b"\n")
        self.written += 1

    def write_many(self, objs: Sequence[Any]) -> None:
        if objs:
            self.output.write(b"".join(orjson.dumps(obj, default=json_default) + b"\n"
                                       for obj in objs))
            self.written += len(objs)

    def flush(self) -> None:
        self.output.flush()

    def close(self) -> None:
        self.output.commit()

    def abort(self) -> None:
        self.output.abort()


def check_readable(path: str) -> None:
    """Raise ``FileNotFoundError``/``PermissionError`` with the path before any work starts."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"is a directory, not a file: {path}")
    if not target.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not os.access(target, os.R_OK):
        raise PermissionError(f"cannot read: {path}")


def file_identity(path: str) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the resolved
    path (symbolic links followed)."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    if stat.S_ISCHR(info.st_mode):         # /dev/null as two outputs is fine
        return ("device", path)
    return ("inode", info.st_dev, info.st_ino)


def check_distinct(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> None:
    """Refuse an output that is one of the inputs or another output.

    ``inputs`` and ``outputs`` are ``(option, path)`` pairs; ``-`` (standard input or output) is
    compared by name only. Raises ``OutputError`` naming both options.
    """
    seen: dict[tuple, str] = {}
    for option, path in inputs:
        if path != "-":
            seen.setdefault(file_identity(path), f"the input {option} {path}")
    outs: dict[tuple, str] = {}
    for option, path in outputs:
        if path is None:
            continue
        identity = ("stdout",) if path == "-" else file_identity(path)
        if identity[0] == "device":
            continue
        if identity in seen:
            raise OutputError(f"{option} {path} is {seen[identity]}: refusing to overwrite it")
        if identity in outs:
            raise OutputError(f"{option} {path} is the same file as {outs[identity]}: "
                              "give each output its own file")
        outs[identity] = f"{option} {path}"
