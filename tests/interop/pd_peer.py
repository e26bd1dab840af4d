#!/usr/bin/env python3
"""An OSDP Peripheral Device built on libosdp, the independent peer of doorhub's interop tests.

    pd_peer.py --port PTY|pty --address N --mode stored|plain [--rx-buffer 256] [--scbk HEX]
               [--vendor-code 0x48440A] [--log-level warning] [--trace] [--bad-mac]

The wrapper reads the port itself and hands libosdp exactly one complete frame (SOM .. LEN bytes,
CRC or checksum checked) per refresh, and writes each reply in one write: a libosdp PD drops a
frame that reaches it in pieces (see shared/notes/libosdp-peer.md).

plain  -- a `hub` door's reader: stdin `card BITS HEX` reports a card read (osdp_RAW, Wiegand);
          every command the CP sends (OUT, LED, BUZ, ...) is printed as a JSON line.
stored -- a door controller with its own credential table, pushed as the reader-link contract
          says: table files over FILETRANSFER (0x80 DHT1 parts, 0x81 DHD1 deltas), osdp_MFG
          QUERY/TIME, osdp_MFGREP STATE/ERROR/ACCESS. The file formats are parsed here, written
          from the contract, independently of doorhub's Rust code.

stdin commands: `card BITS HEX`, `wipe` (stored), `state` (stored). EOF or SIGTERM ends it.
stdout: one JSON object per line (`{"event": ...}`); libosdp's own log goes to stderr.
"""

import argparse
import hashlib
import json
import os
import queue
import select
import signal
import struct
import sys
import threading
import time
import tty

import serial

# ---------------------------------------------------------------------------------------------
# stdout is ours: C-level writes to fd 1 (libosdp's logger prints) go to stderr instead, and the
# JSON lines go to a private duplicate of the original stdout.

_json_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

import osdp  # noqa: E402  (after the redirection, so nothing it prints lands in the JSON)

_print_lock = threading.Lock()


def emit(obj):
    """Prints one JSON line on the (original) stdout."""
    line = json.dumps(obj, separators=(",", ":"))
    with _print_lock:
        _json_out.write(line + "\n")
        _json_out.flush()


# ---------------------------------------------------------------------------------------------
# Framing: pick complete frames out of the byte stream.

SOM = 0x53
MARK = 0xFF
MAX_FRAME = 1440
# A partial frame is given up after this long without a byte (the line went quiet).
INTERBYTE_TIMEOUT = 0.1


def crc16(data):
    """CRC-16/AUG-CCITT: poly 0x1021, init 0x1D0F, not reflected, no final XOR."""
    crc = 0x1D0F
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def frame_ok(frame):
    ctrl = frame[4]
    if ctrl & 0x04:
        if len(frame) < 8:
            return False
        return crc16(frame[:-2]) == frame[-2] | (frame[-1] << 8)
    if len(frame) < 7:
        return False
    return (-sum(frame[:-1])) & 0xFF == frame[-1]


class FrameSplitter:
    """Accumulates line bytes and yields whole, checked frames (SOM first, mark dropped).

    A SOM whose LEN is out of range or whose frame fails its check is dropped on its own and the
    search resumes at the next byte, so a frame hidden behind noise is still found.
    """

    def __init__(self):
        self.buf = bytearray()
        self.last_rx = time.monotonic()

    def push(self, data):
        self.buf += data
        self.last_rx = time.monotonic()

    def next_frame(self):
        while True:
            i = self.buf.find(bytes([SOM]))
            if i < 0:
                self.buf.clear()
                return None
            if i:
                del self.buf[:i]
            if len(self.buf) < 5:
                return self._maybe_idle()
            length = self.buf[2] | (self.buf[3] << 8)
            if length < 7 or length > MAX_FRAME:
                del self.buf[:1]
                continue
            if len(self.buf) < length:
                return self._maybe_idle()
            frame = bytes(self.buf[:length])
            if not frame_ok(frame):
                del self.buf[:1]
                continue
            del self.buf[:length]
            return frame

    def _maybe_idle(self):
        if self.buf and time.monotonic() - self.last_rx > INTERBYTE_TIMEOUT:
            # The rest of this frame is not coming; look past its SOM.
            del self.buf[:1]
            self.last_rx = time.monotonic()
            return self.next_frame()
        return None


def frame_trace(frame):
    """`--trace`: what a received frame is, as the wire shows it: its code and security block."""
    scb = None
    at = 5
    if frame[4] & 0x08 and len(frame) > 6:
        n = frame[5]
        scb = frame[5:5 + n].hex()
        at = 5 + n
    code = frame[at] if at < len(frame) else None
    return {"event": "rx", "code": code, "scb": scb}


class PtyPort:
    """`--port pty`: the peer makes a pty and serves its master end; the CP (the hub) opens the
    slave path as its serial port. The slave stays open here too, so the master never reads as
    hung up while the CP closes and reopens the port."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.name = os.ttyname(self.slave)

    def fileno(self):
        return self.master

    def read(self, n):
        try:
            return os.read(self.master, n)
        except (BlockingIOError, OSError):
            return b""

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self.master, view)
            except BlockingIOError:
                select.select([], [self.master], [], 0.1)
                continue
            view = view[sent:]
        return len(data)

    def close(self):
        os.close(self.master)
        os.close(self.slave)


class FrameChannel(osdp.Channel):
    """libosdp's channel: `read` gives it what the wrapper staged (one frame), `write` sends a
    reply in one write."""

    def __init__(self, port, on_write=None):
        super().__init__()
        self.port = port
        self.pending = b""
        self.on_write = on_write

    def read(self, max_bytes):
        if not self.pending:
            return b""
        out, self.pending = self.pending[:max_bytes], self.pending[max_bytes:]
        return out

    def write(self, buf):
        data = bytes(buf)
        if self.on_write:
            data = self.on_write(data)
        self.port.write(data)
        return len(buf)

    def flush(self):
        pass


# ---------------------------------------------------------------------------------------------
# The credential table (reader-link contract, "Credential push for stored doors").

FULL_TABLE = 0x80
DELTA = 0x81
SUB_QUERY = 0x01
SUB_TIME = 0x02
SUB_STATE = 0x81
SUB_ERROR = 0x8F
SUB_ACCESS = 0x90
ERROR_DELTA = 2
ERROR_MALFORMED = 3
CAPACITY_UNKNOWN = 0xFFFFFFFF
MAX_FILE = 1 << 20


class Malformed(Exception):
    def __init__(self, reason, version=0):
        super().__init__(reason)
        self.reason = reason
        self.version = version


def entry_bytes(bits, data, not_before, not_after):
    return bytes([bits]) + data + struct.pack("<II", not_before, not_after)


def entry_digest(bits, data, not_before, not_after):
    return int.from_bytes(
        hashlib.sha256(entry_bytes(bits, data, not_before, not_after)).digest()[:8], "big")


def table_digest(table):
    """XOR of the first 8 bytes of SHA-256 of each entry's encoding (as an int, big-endian view
    of the 8 bytes, so `to_bytes(8, 'big')` gives them back in order)."""
    d = 0
    for (bits, data), (nb, na) in table.items():
        d ^= entry_digest(bits, data, nb, na)
    return d


class Cursor:
    def __init__(self, data, version=0):
        self.data = data
        self.pos = 0
        self.version = version

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Malformed("truncated", self.version)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def key(self):
        (bits,) = self.unpack("<B")
        if not 1 <= bits <= 128:
            raise Malformed(f"bits {bits} out of 1..128", self.version)
        n = (bits + 7) // 8
        data = self.take(n)
        pad = n * 8 - bits
        if pad and data[-1] & ((1 << pad) - 1):
            raise Malformed("padding bits set", self.version)
        return bits, data

    def entry(self):
        bits, data = self.key()
        nb, na = self.unpack("<II")
        return (bits, data), (nb, na)

    def done(self):
        return self.pos == len(self.data)


def parse_full(data):
    if data[:4] != b"DHT1":
        raise Malformed("bad magic")
    c = Cursor(data)
    c.take(4)
    (version,) = c.unpack("<Q")
    c.version = version
    part, parts, count = c.unpack("<HHI")
    digest = int.from_bytes(c.take(8), "big")
    if parts == 0 or part >= parts:
        raise Malformed(f"part {part} of {parts}", version)
    entries = []
    while not c.done():
        entries.append(c.entry())
    keys = [k for k, _ in entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise Malformed("entries not sorted or repeated", version)
    return {"version": version, "part": part, "parts": parts, "count": count,
            "digest": digest, "entries": entries}


def parse_delta(data):
    if data[:4] != b"DHD1":
        raise Malformed("bad magic")
    c = Cursor(data)
    c.take(4)
    from_version, to_version = c.unpack("<QQ")
    c.version = to_version
    digest = int.from_bytes(c.take(8), "big")
    (nrem,) = c.unpack("<I")
    removes = [c.key() for _ in range(min(nrem, len(data)))]
    if len(removes) != nrem:
        raise Malformed("truncated", to_version)
    (nadd,) = c.unpack("<I")
    adds = [c.entry() for _ in range(min(nadd, len(data)))]
    if len(adds) != nadd:
        raise Malformed("truncated", to_version)
    if not c.done():
        raise Malformed("trailing bytes", to_version)
    return {"from_version": from_version, "to_version": to_version, "digest": digest,
            "removes": removes, "adds": adds}


class Store:
    """The PD's table: {(bits, data): (not_before, not_after)}, its version, staged parts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.table = {}
        self.version = 0
        self.digest = 0
        self.staged_version = None
        self.staged_parts = None
        self.staged = {}
        self.clock_offset = 0.0

    def state(self):
        with self.lock:
            return self.version, len(self.table), self.digest

    def state_event(self):
        version, count, digest = self.state()
        return {"event": "state", "version": version, "count": count,
                "digest": digest.to_bytes(8, "big").hex()}

    def wipe(self):
        with self.lock:
            self.table = {}
            self.version = 0
            self.digest = 0
            self.staged_version = None
            self.staged = {}

    def now(self):
        return time.time() + self.clock_offset

    def decide(self, bits, data):
        """(granted, reason) for a card: 0 ok, 1 unknown, 2 not yet valid, 3 expired."""
        with self.lock:
            validity = self.table.get((bits, data))
        if validity is None:
            return False, 1
        nb, na = validity
        now = self.now()
        if nb and now < nb:
            return False, 2
        if na and now > na:
            return False, 3
        return True, 0

    def apply_file(self, file_type, data):
        """Applies a received file. Returns (result, version, error_code or None, reason)."""
        if file_type == FULL_TABLE:
            p = parse_full(data)
            return self._full_part(p)
        if file_type == DELTA:
            d = parse_delta(data)
            return self._delta(d)
        raise Malformed(f"unknown file type {file_type:#x}")

    def _full_part(self, p):
        with self.lock:
            if self.staged_version != p["version"] or self.staged_parts != p["parts"]:
                self.staged_version = p["version"]
                self.staged_parts = p["parts"]
                self.staged = {}
            self.staged[p["part"]] = p
            if len(self.staged) < p["parts"]:
                return "staged", p["version"], None, f"part {p['part']} of {p['parts']}"
            staged = [self.staged[i] for i in range(p["parts"])]
            self.staged_version = None
            self.staged_parts = None
            self.staged = {}
            table = {}
            last = None
            for part in staged:
                for key, validity in part["entries"]:
                    if last is not None and key <= last:
                        raise Malformed("entries not sorted across parts", p["version"])
                    last = key
                    table[key] = validity
            digest = table_digest(table)
            if len(table) != p["count"] or digest != p["digest"]:
                raise Malformed(
                    f"table has {len(table)} entries, digest {digest:016x}; header says "
                    f"{p['count']}, {p['digest']:016x}", p["version"])
            self.table = table
            self.version = p["version"]
            self.digest = digest
            return "applied", p["version"], None, f"{p['parts']} parts"

    def _delta(self, d):
        with self.lock:
            to = d["to_version"]
            if self.version != d["from_version"]:
                return "error", to, ERROR_DELTA, (
                    f"table is at version {self.version}, delta from {d['from_version']}")
            table = dict(self.table)
            digest = self.digest
            for key in d["removes"]:
                if key not in table:
                    return "error", to, ERROR_DELTA, f"removed card {key[1].hex()} is absent"
                nb, na = table.pop(key)
                digest ^= entry_digest(key[0], key[1], nb, na)
            for key, (nb, na) in d["adds"]:
                if key in table:
                    return "error", to, ERROR_DELTA, f"added card {key[1].hex()} is present"
                table[key] = (nb, na)
                digest ^= entry_digest(key[0], key[1], nb, na)
            if digest != d["digest"]:
                return "error", to, ERROR_DELTA, (
                    f"digest after would be {digest:016x}, delta says {d['digest']:016x}")
            self.table = table
            self.version = to
            self.digest = digest
            return "applied", to, None, (
                f"-{len(d['removes'])} +{len(d['adds'])}")


class FileSink:
    """libosdp file ops: collects one file; hands it to the store when it is complete."""

    def __init__(self, peer):
        self.peer = peer
        self.file_id = None
        self.size = 0
        self.buf = None
        self.have = None

    def open(self, file_id, size):
        if size > MAX_FILE:
            emit({"event": "error", "error": f"file of {size} bytes refused"})
            return -1
        self.file_id = file_id
        self.size = size
        self.buf = bytearray(size)
        self.have = bytearray(size)
        return size

    def read(self, size, offset):
        return b""

    def write(self, buf, offset):
        if self.buf is None or offset + len(buf) > self.size:
            emit({"event": "error",
                  "error": f"fragment at {offset}+{len(buf)} outside the file of {self.size}"})
            return -1
        self.buf[offset:offset + len(buf)] = buf
        self.have[offset:offset + len(buf)] = b"\x01" * len(buf)
        return len(buf)

    def close(self, file_id):
        data, have, size = self.buf, self.have, self.size
        self.buf = self.have = None
        if data is None:
            return 0
        if have.count(1) != size:
            emit({"event": "file", "type": file_id, "size": size, "result": "incomplete",
                  "received": have.count(1)})
            return 0
        self.peer.file_received(file_id, bytes(data))
        return 0

    def ops(self):
        return {"open": self.open, "read": self.read, "write": self.write, "close": self.close}


# ---------------------------------------------------------------------------------------------
# The peer.

COMMAND_NAMES = {
    osdp.Command.Output: "output",
    osdp.Command.Buzzer: "buzzer",
    osdp.Command.LED: "led",
    osdp.Command.Comset: "comset",
    osdp.Command.Text: "text",
    osdp.Command.Manufacturer: "mfg",
    osdp.Command.Keyset: "keyset",
    osdp.Command.FileTransfer: "file_tx",
    osdp.Command.Status: "status",
}
if hasattr(osdp.Command, "ComsetDone"):
    COMMAND_NAMES[osdp.Command.ComsetDone] = "comset_done"


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


class Peer:
    def __init__(self, args):
        self.args = args
        self.stored = args.mode == "stored"
        self.vendor = args.vendor_code
        self.store = Store()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # around every libosdp call
        self.outbox = queue.Queue()  # events submitted by the submitter thread
        if args.port == "pty":
            self.port = PtyPort()
        else:
            self.port = serial.Serial(args.port, baudrate=args.baud, timeout=0)
        self.splitter = FrameSplitter()
        self.channel = FrameChannel(self.port, self._patch_reply)
        self.dropped_oversize = 0

        flags = []
        scbk = None
        if args.scbk:
            scbk = bytes.fromhex(args.scbk)
            if len(scbk) != 16:
                raise SystemExit("--scbk must be 16 bytes (32 hex digits)")
            flags = [osdp.LibFlag.EnforceSecure]
        pd_id = osdp.PdId(version=1, model=1, vendor_code=self.vendor,
                          serial_number=0x10000000 + args.address, firmware_version=0x030209)
        info = osdp.PDInfo(args.address, self.channel, scbk=scbk, flags=flags, id=pd_id,
                           name=f"peer-{args.address}")
        caps = osdp.PDCapabilities([
            (osdp.Capability.OutputControl, 1, 8),
            (osdp.Capability.LEDControl, 1, 2),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.TextOutput, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 0),
            (osdp.Capability.Readers, 0, 1),
        ])
        self.pd = osdp.PeripheralDevice(info, caps, log_level=args.log_level)
        # The wrapper's own refresh thread is not used (it would hand libosdp whatever is on the
        # line); its lock is ours, so PeripheralDevice.submit_event works.
        self.pd.lock = self.lock
        # Our handler directly: the wrapper's would also queue every command forever.
        self.pd.ctx.set_command_callback(self._on_command)
        if self.stored:
            self.sink = FileSink(self)
            with self.lock:
                self.pd.ctx.register_file_ops(0, self.sink.ops())

    # -- libosdp callbacks (run inside refresh, on the I/O thread: never submit from here) --

    def _on_command(self, cmd):
        rc = 0
        try:
            rc = self._handle_command(cmd)
        except Exception as e:  # a raised exception would reach the C binding as NULL
            emit({"event": "error", "error": f"command handler: {e!r}"})
            rc = -1
        # Built at run time: the binding releases a reference of the tuple's second item that
        # it does not own, and a constant tuple's None would slowly drain.
        result = (rc, None)
        return result

    def _handle_command(self, cmd):
        cmd = dict(cmd)
        code = cmd.pop("command", None)
        name = COMMAND_NAMES.get(code, str(code))
        ev = {"event": "command", "command": name}
        ev.update({k: jsonable(v) for k, v in cmd.items()})
        emit(ev)
        if code != osdp.Command.Manufacturer:
            return 0
        if cmd.get("vendor_code") != self.vendor:
            emit({"event": "error", "error": f"MFG for vendor {cmd.get('vendor_code'):#x}"})
            return -1
        data = bytes(cmd.get("data") or b"")
        if not self.stored or not data:
            return -1
        sub = data[0]
        if sub == SUB_QUERY:
            version, count, digest = self.store.state()
            body = bytes([SUB_STATE]) + struct.pack("<QI", version, count) + \
                digest.to_bytes(8, "big") + struct.pack("<I", CAPACITY_UNKNOWN)
            self.outbox.put(self._mfgrep(body))
            return 0
        if sub == SUB_TIME:
            if len(data) != 9:
                return -1
            (unix,) = struct.unpack("<Q", data[1:])
            self.store.clock_offset = unix - time.time()
            emit({"event": "time", "unix": unix})
            return 0
        return -1

    def file_received(self, file_id, data):
        """Called from the file ops' close, inside refresh."""
        ev = {"event": "file", "type": file_id, "size": len(data)}
        try:
            result, version, code, reason = self.store.apply_file(file_id, data)
        except Malformed as e:
            result, version, code, reason = "error", e.version, ERROR_MALFORMED, e.reason
        ev.update({"version": version, "result": result, "reason": reason})
        if code is not None:
            ev["code"] = code
        emit(ev)
        if code is not None:
            emit({"event": "error", "code": code, "version": version, "error": reason})
            self.outbox.put(self._mfgrep(bytes([SUB_ERROR, code]) + struct.pack("<Q", version)))
        if result == "applied":
            emit(self.store.state_event())

    def _mfgrep(self, body):
        return {"event": osdp.Event.ManufacturerReply, "vendor_code": self.vendor,
                "data": body}

    def _patch_reply(self, frame):
        """With --rx-buffer other than libosdp's fixed 256, rewrites the PDCAP receive-buffer
        record of a plain (no Secure Channel) reply, so the PD declares what the wrapper
        enforces. With --bad-mac, spoils the MAC of every sealed reply."""
        if self.args.bad_mac:
            frame = self._spoil_mac(frame)
        rx = self.args.rx_buffer
        if rx == 256:
            return frame
        start = 1 if frame[:1] == bytes([MARK]) else 0
        f = bytearray(frame[start:])
        if len(f) < 8 or f[0] != SOM or f[4] & 0x08 or not f[4] & 0x04 or f[5] != 0x46:
            return frame
        recs = f[6:-2]
        for i in range(0, len(recs) - 2, 3):
            if recs[i] == 0x0A:
                f[6 + i + 1] = rx & 0xFF
                f[6 + i + 2] = rx >> 8
        crc = crc16(f[:-2])
        f[-2], f[-1] = crc & 0xFF, crc >> 8
        return frame[:start] + bytes(f)

    def _spoil_mac(self, frame):
        """`--bad-mac`: flips a bit of the MAC of a sealed reply (SCS_16 or SCS_18, the ones
        that carry one) and fixes the CRC, as a rogue or broken device would answer once the
        session is up. The handshake replies pass untouched. Prints a `bad-mac` line."""
        start = 1 if frame[:1] == bytes([MARK]) else 0
        f = bytearray(frame[start:])
        if len(f) < 14 or f[0] != SOM or not f[4] & 0x08 or not f[4] & 0x04 \
                or f[6] not in (0x16, 0x18):
            return frame
        f[-3] ^= 0x01  # the MAC's last byte, before the CRC
        crc = crc16(f[:-2])
        f[-2], f[-1] = crc & 0xFF, crc >> 8
        emit({"event": "bad-mac", "code": f[5 + f[5]]})
        return frame[:start] + bytes(f)

    # -- threads --

    def io_loop(self):
        fd = self.port.fileno()
        while not self.stop.is_set():
            frame = None
            if not self.channel.pending:
                frame = self.splitter.next_frame()
                if frame is None:
                    r, _, _ = select.select([fd], [], [], 0.01)
                    if r:
                        data = self.port.read(4096)
                        if data:
                            self.splitter.push(data)
                            frame = self.splitter.next_frame()
                if frame is not None and len(frame) + 1 > self.args.rx_buffer:
                    # Too long for the declared receive buffer (counting a mark byte), as a
                    # libosdp PD drops it: silently.
                    self.dropped_oversize += 1
                    emit({"event": "dropped", "bytes": len(frame) + 1})
                    frame = None
            if frame is not None and self.args.trace:
                emit(frame_trace(frame))
            with self.lock:
                if frame is not None:
                    self.channel.pending = frame
                self.pd.ctx.refresh()

    def submit_loop(self):
        while not self.stop.is_set():
            try:
                ev = self.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            self.submit(ev)

    def submit(self, ev):
        with self.lock:
            ok = self.pd.ctx.submit_event(ev)
        if ok is False:
            emit({"event": "error", "error": "submit_event refused"})

    # -- stdin commands (main thread) --

    def command(self, line):
        words = line.split()
        if not words:
            return
        if words[0] == "card" and len(words) == 3:
            bits = int(words[1])
            data = bytes.fromhex(words[2])
            if not 1 <= bits <= 128 or len(data) != (bits + 7) // 8:
                emit({"event": "error", "error": f"bad card {line.strip()!r}"})
                return
            if self.stored:
                granted, reason = self.store.decide(bits, data)
                emit({"event": "access", "granted": granted, "reason": reason, "bits": bits,
                      "data": data.hex()})
                self.submit(self._mfgrep(bytes([SUB_ACCESS, int(granted), reason, bits]) + data))
            else:
                self.submit({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                             "format": osdp.CardFormat.Wiegand, "length": bits, "data": data})
                emit({"event": "card", "bits": bits, "data": data.hex()})
        elif words[0] == "wipe" and self.stored:
            self.store.wipe()
            emit(self.store.state_event())
        elif words[0] == "state" and self.stored:
            emit(self.store.state_event())
        else:
            emit({"event": "error", "error": f"unknown command {line.strip()!r}"})

    def run(self):
        io = threading.Thread(target=self.io_loop, name="osdp-io", daemon=True)
        sub = threading.Thread(target=self.submit_loop, name="osdp-submit", daemon=True)
        io.start()
        sub.start()
        emit({"event": "ready", "address": self.args.address, "mode": self.args.mode,
              "port": self.port.name})
        try:
            for line in sys.stdin:
                try:
                    self.command(line)
                except ValueError as e:
                    emit({"event": "error", "error": f"bad command {line.strip()!r}: {e}"})
        finally:
            self.stop.set()
            io.join(2)
            sub.join(2)
            self.port.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", required=True,
                   help="serial device (e.g. a pty's slave path), or `pty`: make a pty, serve "
                        "its master, print the slave's path (for the CP) in the ready line")
    p.add_argument("--address", type=int, required=True, help="PD address 0..126")
    p.add_argument("--mode", choices=["stored", "plain"], required=True)
    p.add_argument("--rx-buffer", type=int, default=256,
                   help="receive buffer: longer frames (mark byte counted) are dropped")
    p.add_argument("--scbk", help="Secure Channel base key, 32 hex digits (enforces SC)")
    p.add_argument("--vendor-code", type=lambda s: int(s, 0), default=0x48440A)
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--bad-mac", action="store_true",
                   help="spoil the MAC of every sealed reply (`bad-mac` lines)")
    p.add_argument("--trace", action="store_true",
                   help="print each received frame's code and security block (`rx` lines)")
    p.add_argument("--log-level", default="warning",
                   choices=["error", "warning", "notice", "info", "debug"])
    args = p.parse_args(argv)
    args.log_level = {
        "error": osdp.LogLevel.Error, "warning": osdp.LogLevel.Warning,
        "notice": osdp.LogLevel.Notice, "info": osdp.LogLevel.Info,
        "debug": osdp.LogLevel.Debug,
    }[args.log_level]
    if not 0 <= args.address <= 126:
        p.error("--address must be 0..126")
    if args.rx_buffer > 256:
        p.error("--rx-buffer is at most 256 (libosdp's own buffer)")
    return args


def main():
    args = parse_args()

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        peer = Peer(args)
    except serial.SerialException as e:
        emit({"event": "error", "error": f"open {args.port}: {e}"})
        return 1
    try:
        peer.run()
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
