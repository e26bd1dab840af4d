"""A libosdp ControlPanel (PyPI libosdp 3.2.9) driving simulated readers, for tests/sim_interop.rs.

Protocol with the test, one JSON object per line on stdout:
  1. prints {"event": "pty", "path": SLAVE} after creating a pty pair with os.openpty();
  2. waits for the line "go" on stdin (the test starts `doorhub-sim` on SLAVE first, so no
     command sits in the pty before the reader listens);
  3. starts the CP with one PD per --addresses entry on the one line (multi-drop), waits until
     all are online, and prints {"event": "online", ...} per PD with its PDID and receive buffer;
  4. sends each PD an osdp_OUT and an osdp_LED, and in stored mode an osdp_MFG QUERY;
  5. prints every card read / manufacturer reply it gets as {"event": "card"|"mfgrep", ...},
     and {"event": "done"} once each PD has sent a card read (plain) or a STATE and an ACCESS
     (stored). Anything else ends with {"event": "error"} and exit status 1.

The channel hands libosdp one complete frame per read (notes/libosdp-peer.md): it reads the pty
itself and splits the bytes into frames.
"""

import argparse
import json
import os
import sys
import termios
import threading
import time
import tty

import osdp
from osdp import (Capability, Command, CommandLEDColor, ControlPanel, Event, LogLevel,
                  PDInfo)

VENDOR_CODE = 0x48440A
SOM = 0x53
MAX_FRAME = 1440
DEADLINE_S = 12.0


def emit(**fields):
    print(json.dumps(fields), flush=True)


class PtyChannel(osdp.Channel):
    """Non-blocking channel over the pty master that returns whole frames."""

    def __init__(self, fd):
        super().__init__()
        self.fd = fd
        self.buf = bytearray()
        self.lock = threading.Lock()

    def _fill(self):
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                # EIO while no one holds the slave open: nothing to read.
                return
            if not chunk:
                return
            self.buf += chunk

    def read(self, max_bytes):
        with self.lock:
            self._fill()
            while True:
                start = self.buf.find(bytes([SOM]))
                if start < 0:
                    self.buf.clear()
                    return b""
                del self.buf[:start]
                if len(self.buf) < 5:
                    return b""
                length = self.buf[2] | (self.buf[3] << 8)
                if length < 7 or length > MAX_FRAME:
                    del self.buf[:1]
                    continue
                if len(self.buf) < length or length > max_bytes:
                    return b""
                frame = bytes(self.buf[:length])
                del self.buf[:length]
                return frame

    def write(self, buf):
        # One write per frame; a pty takes a whole small frame at once.
        return os.write(self.fd, bytes(buf))

    def flush(self):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addresses", default="101")
    ap.add_argument("--mode", choices=["plain", "stored"], default="plain")
    args = ap.parse_args()
    addresses = [int(a) for a in args.addresses.split(",")]

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    emit(event="pty", path=os.ttyname(slave))

    line = sys.stdin.readline().strip()
    if line != "go":
        emit(event="error", message=f"expected go, got {line!r}")
        return 1
    # Drop anything written before the reader listened.
    termios.tcflush(master, termios.TCIOFLUSH)

    channel = PtyChannel(master)
    infos = [PDInfo(a, channel, scbk=None, flags=[]) for a in addresses]
    cp = ControlPanel(infos, log_level=LogLevel.Warning)
    cp.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        if not cp.online_wait_all(timeout=8):
            emit(event="error", message="PDs did not come online",
                 online=[a for a in addresses if cp.is_online(a)])
            return 1
        for a in addresses:
            pd_id = cp.get_pd_id(a)
            rx = cp.check_capability(a, Capability.ReceiveBufferSize)
            emit(event="online", address=a, vendor_code=pd_id.vendor_code,
                 serial=pd_id.serial_number, rx_buffer=rx[0] | (rx[1] << 8))

        for a in addresses:
            ok_out = cp.submit_command(a, {
                "command": Command.Output, "output_no": 0, "control_code": 5,
                "timer_count": 30,
            })
            ok_led = cp.submit_command(a, {
                "command": Command.LED, "reader": 0, "led_number": 0, "control_code": 2,
                "on_count": 5, "off_count": 0, "on_color": CommandLEDColor.Green,
                "off_color": CommandLEDColor.Black, "timer_count": 30, "temporary": True,
            })
            ok_mfg = True
            if args.mode == "stored":
                ok_mfg = cp.submit_command(a, {
                    "command": Command.Manufacturer, "vendor_code": VENDOR_CODE,
                    "data": bytes([0x01]),
                })
            if not (ok_out and ok_led and ok_mfg):
                emit(event="error", message=f"submit_command failed for {a}")
                return 1
        emit(event="commands_sent")

        pending = {}
        for a in addresses:
            pending[a] = {"card"} if args.mode == "plain" else {"state", "access"}
        while any(pending.values()):
            if time.monotonic() > deadline:
                emit(event="error", message="timed out", pending={
                    str(a): sorted(p) for a, p in pending.items()})
                return 1
            for a in addresses:
                ev = cp.get_event(a, timeout=0.05)
                if ev is None:
                    continue
                kind = ev.get("event")
                if kind == Event.CardRead:
                    emit(event="card", address=a, format=int(ev.get("format", -1)),
                         length=ev.get("length"), data=bytes(ev.get("data", b"")).hex())
                    pending[a].discard("card")
                elif kind == Event.ManufacturerReply:
                    data = bytes(ev.get("data", b""))
                    emit(event="mfgrep", address=a, vendor_code=ev.get("vendor_code"),
                         data=data.hex())
                    if data[:1] == b"\x81":
                        pending[a].discard("state")
                    elif data[:1] == b"\x90":
                        pending[a].discard("access")
                else:
                    emit(event="other", address=a, kind=str(kind))
        emit(event="done")
        return 0
    finally:
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
