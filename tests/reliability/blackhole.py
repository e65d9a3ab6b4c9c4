"""A TCP proxy that forwards normally until told to hold: then it accepts and keeps every byte.

What a stuck server or a silent network partition looks like to a client: connections are
accepted (the kernel completes the handshake), writes succeed, nothing ever comes back. On
`release()` the held bytes are delivered in order and forwarding goes on, as when a stuck
server resumes. One thread per direction per connection; bytes are polled every 20 ms.
Our own because no proxy library (toxiproxy needs its Go binary) installs from PyPI here.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

from tests.reliability.servers import free_port

_POLL_SECONDS = 0.02


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._held = threading.Event()
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self._thread = threading.Thread(target=self._accept, name="blackhole-accept", daemon=True)

    def start(self) -> BlackHoleProxy:
        self._thread.start()
        return self

    def hold(self) -> None:
        """From now on accept connections and bytes, and pass nothing either way."""
        self._held.set()

    def release(self) -> None:
        """Deliver what was held and forward again."""
        self._held.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, destination in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, destination), daemon=True).start()

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        pending = bytearray()
        ended = False  # the source closed: held too, like its bytes
        try:
            while not self._stopped.is_set():
                if ended:
                    self._stopped.wait(_POLL_SECONDS)
                else:
                    readable, _, _ = select.select([source], [], [], _POLL_SECONDS)
                    if readable:
                        data = source.recv(65536)
                        ended = not data
                        pending += data
                if not self._held.is_set():
                    if pending:
                        destination.sendall(pending)
                        pending.clear()
                    if ended:
                        break
        except (OSError, ValueError):  # a side closed, or stop() closed the sockets
            pass
        finally:
            for sock in (source, destination):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets -= {source, destination}


@contextlib.contextmanager
def black_hole(host: str, port: int) -> Iterator[BlackHoleProxy]:
    proxy = BlackHoleProxy(host, port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
