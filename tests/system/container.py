"""A throw-away systemd container: `systemd-nspawn --boot` over an overlay of `/`.

The host's root is the lower layer, so the container has every package this
host has (python3-yaml, python3-systemd, ...) and `apt-get install ./x.deb`
works offline. Another root can be the lower layer instead (`lower`; the
tests take it from MCASTD_SYSTEM_ROOT): scripts/other-release boots a Debian
13 root made with mmdebstrap that way. Writes land in an upper directory that is deleted afterwards.
The container has a network namespace of its own (`--private-network`), with
only `lo` and a veth pair made inside it: no datagram of the tests can reach
the host's interfaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

# Commands inside run with a clean environment: a venv or pyenv on the
# caller's PATH must not leak into the container.
CLEAN_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
NSPAWN = "systemd-nspawn"
BOOT_TIMEOUT = 90.0


class ContainerError(RuntimeError):
    """The container could not be booted or reached."""


class Container:
    """Boot with `start()`, drive it with `run()`, always `destroy()`."""

    def __init__(self, name_prefix: str = "mcastd-sys-", lower: str = "/") -> None:
        self.name = name_prefix + uuid.uuid4().hex[:8]
        self.lower = lower
        self.dir = Path(tempfile.mkdtemp(prefix=self.name + "-"))
        self.root = self.dir / "root"
        self.log_path = self.dir / "nspawn.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.mounted = False

    def start(self) -> None:
        upper, work = self.dir / "upper", self.dir / "work"
        for d in (upper, work, self.root):
            d.mkdir()
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.lower},upperdir={upper},workdir={work}",
                str(self.root),
            ],
            check=True,
        )
        self.mounted = True
        # A fresh machine-id: journald, DynamicUser= and D-Bus key off it.
        (self.root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        with open(self.log_path, "wb") as log:
            self.nspawn = subprocess.Popen(
                [
                    NSPAWN,
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "--console=passive",
                    f"--machine={self.name}",
                    f"--directory={self.root}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.leader = self._find_leader()
        if os.stat(f"/proc/{self.leader}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise ContainerError("the container shares the host's network namespace")
        # Until PID 1 has set up its bus socket, systemctl cannot connect: retry.
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            state = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=BOOT_TIMEOUT
            )
            if state.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state.stdout.strip() not in ("running", "degraded"):
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise ContainerError(
                f"container did not boot: {state.stdout!r} {state.stderr!r} {failed}"
            )

    def _find_leader(self) -> int:
        """PID (on the host) of the container's systemd: the child of nspawn named systemd."""
        assert self.nspawn is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise ContainerError(f"{NSPAWN} exited: {self.log_path.read_text()}")
            found = subprocess.run(
                ["ps", "-o", "pid=,comm=", "--ppid", str(self.nspawn.pid)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if "systemd" in found:
                return int(found[found.index("systemd") - 1])
            time.sleep(0.1)
        raise ContainerError(f"no systemd in the container: {self.log_path.read_text()}")

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in all of the container's namespaces; output as text."""
        command = [
            "nsenter",
            f"--target={self.leader}",
            "--all",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in CLEAN_ENV.items()),
            *argv,
        ]
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            command,
            input=data if data is not None else b"",
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        result = subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{argv} exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}"
            )
        return result

    def write(self, path: str, data: str | bytes) -> None:
        """Write a file inside the container (through its own mount namespace)."""
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], input=data)

    def destroy(self) -> None:
        """Power off (or kill) the container, unmount the overlay, delete everything."""
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                if self.leader:
                    # SIGRTMIN+4 asks systemd for a clean poweroff.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGRTMIN + 4)
                try:
                    self.nspawn.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    # Killing the PID namespace's init kills everything in it.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.nspawn.pid, signal.SIGKILL)
                    self.nspawn.wait(timeout=10)
        finally:
            if self.mounted:
                subprocess.run(["umount", str(self.root)], check=False)
                if os.path.ismount(self.root):
                    subprocess.run(["umount", "--lazy", str(self.root)], check=False)
                self.mounted = False
            shutil.rmtree(self.dir, ignore_errors=True)
