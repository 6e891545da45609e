"""TensorBoard event files without TensorBoard: a writer for scalars and a reader, numpy-free and
framework-free, so both backends log identical tags through data.loop.Recorder.

    w = EventWriter("logs/mnist/tf-cnn");  w.scalar("train/loss", 0.41, step=25);  w.close()
    read_scalars("logs/mnist/tf-cnn")  ->  {"train/loss": [(25, 0.41)], ...}
    python -m data.tensorboard logs/    (a summary of every run folder under logs/)

The format, as TensorBoard reads it (tensorboard/backend/event_processing/event_file_loader.py):
each record is TFRecord-framed,
    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
where masked(crc) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2^32 and crc32c is the Castagnoli CRC.
The data is a serialized tensorflow.Event protobuf, encoded here by hand:
    Event:   1 wall_time (double) | 2 step (int64) | 3 file_version (string, first record) | 5 summary
    Summary: 1 value (repeated)
    Value:   1 tag (string) | 2 simple_value (float)
TensorBoard shows a folder's event files as one run; files named `*tfevents*` are picked up.
"""
from __future__ import annotations

import fcntl
import math
import os
import socket
import struct
import sys
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"  # what TensorFlow's own writers put in the first record

# --- crc32c (Castagnoli, reflected polynomial 0x82F63B78), table-driven ------------------------------

def _crc_table() -> tuple:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """crc32c(b"123456789") == 0xE3069283 (the standard check value)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format: just what Event needs ---------------------------------------------------

def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64 fields: negatives take ten bytes, as protobuf encodes them
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    """simple_value is a float32: a finite value beyond its range is written as +-inf, as numpy would
    round it (struct refuses it with an OverflowError: a run with --lr 1e39 crashed its logging)."""
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_event(wall_time: float, step: int, scalars: dict | None = None, file_version: str | None = None) -> bytes:
    """A serialized Event with `scalars` ({tag: value}) as its summary, or with a file_version.
    Fields left at their default (0) are omitted, as proto3 serializers do: the bytes equal protobuf's."""
    out = b""
    if wall_time:
        out += _key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _len_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(_len_delimited(1, _len_delimited(1, tag.encode()) + _key(2, 5) + _float32(value))
                          for tag, value in scalars.items())
        out += _len_delimited(5, values)
    return out


def _fields(buf: bytes):
    """Yield (field number, wire type, value) over one message: ints for varints, bytes otherwise."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i: i + 8], i + 8
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i: i + size], i + size
        elif wire == 5:
            value, i = buf[i: i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        if i > n:
            raise ValueError("protobuf message ends inside a field")
        yield field, wire, value


def _read_varint(buf: bytes, i: int) -> tuple:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("protobuf message ends inside a varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def decode_event(data: bytes) -> dict:
    """{"wall_time", "step", "file_version" (or None), "scalars": {tag: value}} of a serialized Event."""
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": {}}
    for field, wire, value in _fields(data):
        if field == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >> 63 else value
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode()
        elif field == 5 and wire == 2:
            for vfield, vwire, v in _fields(value):
                if vfield != 1 or vwire != 2:
                    continue
                tag, simple = None, None
                for f, w, x in _fields(v):
                    if f == 1 and w == 2:
                        tag = x.decode()
                    elif f == 2 and w == 5:
                        simple = struct.unpack("<f", x)[0]
                if tag is not None and simple is not None:
                    event["scalars"][tag] = simple
    return event


# --- records ---------------------------------------------------------------------------------------

def frame(data: bytes) -> bytes:
    """One TFRecord: length, its masked crc, the data, the data's masked crc."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def read_records(path: str | os.PathLike):
    """Yield each record's data. A truncated last record (a writer still running, or killed) ends the
    file quietly, as in TensorBoard; a checksum that does not match raises ValueError."""
    blob = Path(path).read_bytes()
    i = 0
    while i + 12 <= len(blob):
        header = blob[i: i + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", blob[i + 8: i + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: record at byte {i}: length checksum does not match; not an event file or corrupt")
        end = i + 12 + length + 4
        if end > len(blob):
            return
        data = blob[i + 12: i + 12 + length]
        (crc,) = struct.unpack("<I", blob[end - 4: end])
        if crc != masked_crc32c(data):
            raise ValueError(f"{path}: record at byte {i}: data checksum does not match; the file is corrupt")
        yield data
        i = end


# --- writer and reader -----------------------------------------------------------------------------

class EventWriter:
    """Appends scalar events to a new file `events.out.tfevents.<time>.<host>.<pid>.klc` in `logdir`.
    The file appears with the first event; a folder run_dir claimed for a run that wrote nothing (refused
    before it trained) is removed when the writer closes or moves."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        self._created = time.time()
        self.path = self.logdir / f"events.out.tfevents.{int(self._created)}.{socket.gethostname()}.{os.getpid()}.klc"
        self._file = None
        self._closed = False

    def _open(self):
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._file is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
            self._file.write(frame(encode_event(self._created, 0, file_version=FILE_VERSION)))
            self._file.flush()
            release_claim(self.logdir)  # the event file marks the folder as taken from now on
        return self._file

    def retarget(self, logdir: str | os.PathLike) -> None:
        """Write into `logdir` instead (before the first event only): a resumed run's own folder."""
        if self._file is not None:
            raise ValueError(f"{self.path}: already written; cannot move to {logdir}")
        if Path(logdir) != self.logdir:
            release_claim(self.logdir, remove_folder=True)
        self.logdir = Path(logdir)
        self.path = self.logdir / self.path.name

    def scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self.scalars({tag: value}, step, wall_time)

    def scalars(self, values: dict, step: int, wall_time: float | None = None) -> None:
        """Several tags at one step, one event (non-finite values are written as they are)."""
        self._open().write(frame(encode_event(time.time() if wall_time is None else wall_time, int(step),
                                            {k: float(v) for k, v in values.items()})))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif not self._closed:  # nothing written: give back the folder run_dir claimed, if it did
            release_claim(self.logdir, remove_folder=True)
        self._closed = True


CLAIM = ".klc-claim"  # in a run folder that a new run has taken but not yet written events into
_held: dict = {}  # folder -> the open claim file whose flock this process holds


def claim(folder: Path) -> bool:
    """Take `folder` for a new run: made if need be, with an flock held on its claim file until the first event.
    Two runs of one name starting at once both chose the first folder without events, and TensorBoard showed
    one run restarting. The lock dies with its process: a run that crashed before its first event leaves a
    claim file that the next run takes over (it took the next number, leaving an empty folder)."""
    folder = Path(folder)
    if str(folder) in _held:
        return True
    if event_files(folder):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / CLAIM, os.O_CREAT | os.O_RDWR, 0o644)
    except FileNotFoundError:  # the folder was given back (removed) meanwhile
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live run's claim
        os.close(fd)
        return False
    except OSError:  # a filesystem without flock: taken unprotected, as before claims were locks
        pass
    try:  # still the claim file (not one given back and removed or replaced meanwhile)?
        ours = os.fstat(fd).st_ino == os.stat(folder / CLAIM).st_ino
    except FileNotFoundError:
        ours = False
    if ours and event_files(folder):  # taken and written since the first look: this process's open made the
        (folder / CLAIM).unlink(missing_ok=True)  # claim file after its owner removed it; remove it again
        ours = False
    if not ours:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)  # for a person looking, not for the lock
    _held[str(folder)] = fd
    return True


def claimed_by_another(folder: Path) -> bool:
    """Whether a live process other than this one holds `folder`'s claim."""
    if str(Path(folder)) in _held:
        return False
    try:
        fd = os.open(Path(folder) / CLAIM, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # nobody holds it: a claim left by a run that died before its first event
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def release_claim(folder: Path, remove_folder: bool = False) -> None:
    """Give back this process's claim on `folder` (and the folder, if asked and now empty)."""
    fd = _held.pop(str(Path(folder)), None)
    if fd is None:
        return
    try:
        (Path(folder) / CLAIM).unlink()  # while locked: a process waiting on the old file finds it gone
        if remove_folder:
            Path(folder).rmdir()
    except OSError:  # gone meanwhile, or a folder not empty: leave it
        pass
    finally:
        os.close(fd)


def event_files(logdir: str | os.PathLike) -> list:
    """The event files directly in `logdir`, oldest name first (TensorBoard's order)."""
    d = Path(logdir)
    return sorted(p for p in d.iterdir() if p.is_file() and "tfevents" in p.name) if d.is_dir() else []


def read_events(path: str | os.PathLike) -> list:
    return [decode_event(data) for data in read_records(path)]


def read_scalars(logdir: str | os.PathLike) -> dict:
    """{tag: [(step, value), ...]} over every event file in `logdir`, in file then record order."""
    out: dict = {}
    for path in event_files(logdir):
        for event in read_events(path):
            for tag, value in event["scalars"].items():
                out.setdefault(tag, []).append((event["step"], value))
    return out


def run_dir(root: str | os.PathLike, cfg, backend: str) -> Path:
    """Where a run logs: DIR/<dataset>/<backend>[-<loop>]-<model>-s<seed>/ (the loop named when it is not
    the backend's default), so one TensorBoard shows both backends, every seed and loop side by side.
    A new run whose folder already holds events gets <name>-2, -3, ... (as Lightning's versions): steps
    starting again at 1 in one folder would be read as a restart; a --resume continues the newest one,
    until its checkpoint names the run's own folder (Recorder.resume retargets the writer there)."""
    from .contract import default_loop
    loop = "" if not cfg.loop or cfg.loop == default_loop(backend) else f"-{cfg.loop}"
    name = f"{backend}{loop}-{cfg.model}-s{cfg.seed}"
    base = Path(root) / cfg.dataset / name
    versions = [base]
    while event_files(versions[-1]) or claimed_by_another(versions[-1]):
        versions.append(base.with_name(f"{name}-{len(versions) + 1}"))
    # a resumed run continues the newest run of its name; a new one claims the first folder without events
    # (another run may claim it between this look and the claim: then the next one)
    if cfg.resume and len(versions) > 1:
        return versions[-2]
    while not claim(versions[-1]):
        versions.append(base.with_name(f"{name}-{len(versions) + 1}"))
    return versions[-1]


def main(argv: list) -> int:
    """python -m data.tensorboard DIR: every run folder under DIR with its tags, points and last value."""
    if len(argv) != 1:
        print("usage: python -m data.tensorboard DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    if root.is_file() and "tfevents" in root.name:  # an event file: its run folder (it said "no event files")
        root = root.parent
    folders = sorted({p.parent for p in root.rglob("*tfevents*")}) if root.is_dir() else []
    if not folders:
        print(f"python -m data.tensorboard: no event files under {root}", file=sys.stderr)
        return 1
    for folder in folders:
        print(folder.relative_to(root) if folder != root else folder)
        for tag, points in sorted(read_scalars(folder).items()):
            step, value = points[-1]
            print(f"  {tag:24s} {len(points):6d} points, last step {step}: {value:.6g}")
    return 0


if __name__ == "__main__":
    from .cli import run_cli
    sys.exit(run_cli(main, prog="python -m data.tensorboard"))  # a corrupt file: one line, not a traceback
