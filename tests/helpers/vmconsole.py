"""A running qemu guest driven as a person would: its serial console, its monitor, SSH.

The guest's serial port is qemu's stdio (``-nographic``), read as a stream into one
buffer; :meth:`Guest.expect` waits for text after a position, :meth:`Guest.send` types.
The monitor listens on a unix socket, for ``system_powerdown`` (the ACPI power button,
what ``virsh shutdown`` presses). Everything is torn down on exit, whatever happened.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class GuestError(AssertionError):
    """The guest did not do what the test waited for; carries the console's tail."""


class Guest:
    """``with Guest(command, monitor=path) as vm:``; qemu is killed on exit if still running."""

    def __init__(self, command: Sequence[str], *, monitor: Path, name: str = "guest") -> None:
        self.name = name
        self.monitor_path = monitor
        self.command = [*command, "-monitor", f"unix:{monitor},server,nowait"]
        self.output = bytearray()
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.selector.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    def _read(self, timeout: float) -> bool:
        """Read what the guest printed within ``timeout``; False once qemu has exited."""
        assert self.process.stdout is not None
        if self.selector.select(timeout=timeout):
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
            except BlockingIOError:
                return True
            if chunk:
                self.output += chunk
                return True
        return self.process.poll() is None

    def expect(self, pattern: str, *, after: int = 0, timeout: float = 60.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regular expression) shows after byte ``after``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output[after:].decode("utf-8", "replace"))
            if found:
                return found
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: no {pattern!r} within {timeout:.0f} s; console "
                                 f"ends with:\n{self.tail()}")
            if not self._read(min(1.0, max(0.0, deadline - time.monotonic()))):
                raise GuestError(f"{self.name}: qemu exited ({self.process.returncode}) before "
                                 f"{pattern!r}; console ends with:\n{self.tail()}")

    def send(self, text: str) -> int:
        """Type ``text`` on the serial console; returns the output position before it."""
        assert self.process.stdin is not None
        mark = len(self.output)
        for char in text:
            # One byte at a time, as a person types: getty and login drop a burst they read
            # before they have set the line up.
            self.process.stdin.write(char.encode())
            self.process.stdin.flush()
            time.sleep(0.01)
        return mark

    def run(self, command: str, *, prompt: str = r"\n[^\n]*[#$] (\x1b\[6n)?$",
            timeout: float = 60.0) -> str:
        """Run a shell command on the logged-in console; its output (between the echo of
        the command and the next prompt). busybox ash may follow its prompt with a cursor
        position query (ESC [6n) on a serial line."""
        marker = f"__done_{int(time.monotonic() * 1000)}__"
        mark = self.send(f"{command}; echo {marker}\n")
        self.expect(rf"\n{marker}", after=mark, timeout=timeout)
        self.expect(prompt, after=mark, timeout=timeout)
        out = self.output[mark:].decode("utf-8", "replace")
        body = out.split("\n", 1)[1] if "\n" in out else ""
        return body.split(marker)[0].replace("\r", "")

    def monitor(self, command: str) -> str:
        """One command on qemu's human monitor; what it answered."""
        deadline = time.monotonic() + 10
        while not self.monitor_path.exists():
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: no monitor socket at {self.monitor_path}")
            time.sleep(0.1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(os.fspath(self.monitor_path))
            answer = b""
            while b"(qemu)" not in answer:
                answer += sock.recv(4096)
            sock.sendall(command.encode() + b"\n")
            answer = b""
            while answer.count(b"(qemu)") < 1:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        return answer.decode("utf-8", "replace")

    def wait_exit(self, timeout: float) -> int:
        """Wait for qemu to exit (the guest powered off), reading the console meanwhile."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: still running {timeout:.0f} s later; console "
                                 f"ends with:\n{self.tail()}")
            self._read(0.5)
        while self._read(0.1) and self.selector.select(timeout=0):
            pass
        return self.process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
