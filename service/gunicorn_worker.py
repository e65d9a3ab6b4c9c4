"""gunicorn's sync worker, plus: on a graceful stop, serve what is already queued.

On SIGTERM a sync worker finishes the request in hand and exits. Connections the kernel
has already accepted into the listening socket's queue, waiting for a free worker, are
then reset when the last worker closes the socket: requests a client sent before or
just after the signal are lost. This worker takes those too before it exits, up to
half of gunicorn's graceful_timeout.
"""

from __future__ import annotations

import errno
import time

from gunicorn import util
from gunicorn.workers.sync import SyncWorker


class DrainingSyncWorker(SyncWorker):
    def run(self) -> None:
        super().run()  # returns once SIGTERM cleared `alive` (or the master is gone)
        self.drain(deadline=time.monotonic() + self.cfg.graceful_timeout / 2)

    def drain(self, *, deadline: float) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            while time.monotonic() < deadline:
                try:
                    client, address = listener.accept()
                except OSError as error:
                    if error.errno == errno.ECONNABORTED:
                        continue  # that client gave up; others may be queued
                    if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break  # nothing queued any more
                    raise
                self.notify()  # still alive, for the master's timeout check
                client.setblocking(True)
                util.close_on_exec(client)
                self.handle(listener, client, address)
            # Close at once: a connection queued between the last accept and the exit of
            # this process would be reset; once every copy is closed, new ones are refused.
            listener.close()
