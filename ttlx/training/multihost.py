"""Several processes of one run (``--multihost``): start-up, and a prompt end, with one sentence, when a process
of the run fails or is gone.

``jax.distributed.initialize()`` connects every process to a coordination service (hosted by process 0) to
which each sends heartbeats. When a process dies, the others are blocked in a collective of the next train
step (gloo on CPU, NCCL on GPUs), which does not return; the service notices the missing heartbeats after
:data:`HEARTBEAT_TIMEOUT_S` (JAX's default: 100 s) and every other process then aborts with a C++ stack dump
(JAX's reaction; the Python callback it offers cannot be used with jaxlib 0.10.2: std::bad_cast). So ttlx
watches the processes itself (:func:`watch_processes`): when one ends without finishing, the others end
within a second with one sentence and exit code :data:`EXIT_PEER_LOST`. A process that fails itself (an
error raised in it) prints its sentence and exits at once, skipping JAX's shutdown barrier (which would
wait for processes blocked in a collective), and the others follow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

HEARTBEAT_TIMEOUT_S = 20  # JAX's default is 100 s: a dead process kept the others blocked for about a minute
EXIT_PEER_LOST = 3
# How long a finished process waits for the others at JAX's shutdown barrier (JAX's default: 300 s). They
# finish together; a process that died after saying goodbye (a SIGTERM during its own shutdown) no longer holds
# the others for five minutes.
SHUTDOWN_TIMEOUT_S = 60


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` with ttlx's heartbeat timeout, then the watch of the other processes."""
    import jax

    jax.distributed.initialize(coordinator, num_processes, process_id, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    if jax.process_count() > 1:
        watch_processes()


BYE = b"."  # sent on an orderly end, so that the other side stops watching instead of stopping


def watch_processes() -> None:
    """Connect process 0 with every other process by a TCP socket that a daemon thread reads: a process that
    ends without saying goodbye (killed, crashed) closes it, and its peer ends too, with one sentence. The
    kernel closes a dead process's sockets at once, so this takes well under a second, where JAX's heartbeat
    takes :data:`HEARTBEAT_TIMEOUT_S` (it remains for a host that vanishes with its kernel)."""
    import atexit
    import socket
    import threading

    import jax
    from jax._src import distributed

    client, me, count = distributed.global_state.client, jax.process_index(), jax.process_count()
    if me == 0:
        server = socket.create_server(("", 0))
        host = (distributed.global_state.coordinator_address or "127.0.0.1").rsplit(":", 1)[0]
        client.key_value_set("ttlx/watch", f"{host}:{server.getsockname()[1]}")
        server.settimeout(300)
        peers = []
        for _ in range(count - 1):
            conn, _ = server.accept()
            conn.settimeout(None)
            peers.append((int(conn.makefile("rb").read(16).decode()), conn))
        server.close()
    else:
        host, port = client.blocking_key_value_get("ttlx/watch", 60_000).rsplit(":", 1)
        conn = socket.create_connection((host, int(port)), timeout=60)
        conn.settimeout(None)
        conn.sendall(f"{me:<16}".encode())
        peers = [(0, conn)]
    for peer, conn in peers:
        threading.Thread(target=_watch, args=(peer, conn), name=f"ttlx-watch-{peer}", daemon=True).start()

    def goodbye() -> None:
        for _, conn in peers:
            try:
                conn.sendall(BYE)
            except OSError:
                pass

    atexit.register(goodbye)  # runs before JAX's own shutdown (registered earlier)


def _watch(peer: int, conn) -> None:
    try:
        data = conn.recv(1)
    except OSError:
        data = b""
    if data == BYE:
        return
    import jax

    _exit(EXIT_PEER_LOST, f"Error: process {peer} of this {jax.process_count()}-process run stopped without "
          f"finishing (killed, or it failed: see its log), so process {jax.process_index()} stops too; re-run "
          "the same commands on every host to resume from the last checkpoint.")


def _exit(code: int, message: str) -> None:
    try:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
    finally:
        os._exit(code)


@contextlib.contextmanager
def ending_promptly():
    """In a multi-process run, an error in this process prints its sentence (a UserError) or its traceback
    and ends the process at once (see the module's text); a single process is left alone."""
    import jax

    if jax.process_count() == 1:
        yield
        return
    from ttlx.errors import UserError
    from ttlx.registry import UnknownNameError
    from ttlx.training.stopping import TrainingStopped

    try:
        yield
    except TrainingStopped:  # every process stopped at the same step: JAX's shutdown is safe
        raise
    except (UserError, UnknownNameError) as err:
        _exit(2, f"Error: {err}")
    except BaseException as err:  # noqa: BLE001 - reported here, then the process ends
        traceback.print_exc()
        _exit(1, f"Error: process {jax.process_index()} of {jax.process_count()} failed "
              f"({type(err).__name__}); the other processes of this run stop too.")
