"""A TCP proxy in front of the broker that injects faults the worker must survive.

The broker advertises the proxy's port, so every client connection goes through it. Modes:
``pass`` forwards bytes; ``down`` closes every connection and refuses new ones (the broker is
gone, as far as the worker can tell, while it keeps its data); ``reject_produce`` reads the Kafka
request framing (int32 length, then int16 api_key) from clients and drops the connection of any
client that sends a Produce request (api_key 0), so writes fail while reads go on.
"""

from __future__ import annotations

import socket
import struct
import threading

PRODUCE_API_KEY = 0


class FaultProxy:
    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.listen_port = listen_port
        self.target_port = target_port
        self.mode = "pass"
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    # -------------------------------------------------------------- control

    def start(self) -> "FaultProxy":
        self._open_listener()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._drop_all()

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "down", "reject_produce")
        previous, self.mode = self.mode, mode
        if mode == "down":
            self._close_listener()
            self._drop_all()
        elif previous == "down":
            self._open_listener()

    # ------------------------------------------------------------ internals

    def _open_listener(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.listen_port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def _drop_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._connections.update((client, upstream))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to broker, one whole request at a time, so a Produce can be refused."""
        try:
            while True:
                header = _read_exactly(client, 4)
                size = struct.unpack(">i", header)[0]
                body = _read_exactly(client, size)
                api_key = struct.unpack(">h", body[:2])[0]
                if self.mode == "reject_produce" and api_key == PRODUCE_API_KEY:
                    break
                upstream.sendall(header + body)
        except (OSError, ConnectionError, struct.error):
            pass
        _close(client)
        _close(upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
