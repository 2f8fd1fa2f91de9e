"""Signing tokens in worker processes, off the server's event loop.

An RS256 signature costs far more CPU than the rest of a token request,
and CPython's GIL keeps a thread pool from signing in parallel. A
`SigningPool` hands each signature to one of a few worker processes over a
pipe, so the event loop keeps parsing requests while other cores sign.

Each worker receives a key's PEM once, the first time it signs with that
key id, and keeps it. A worker that dies is replaced; its pending request
is signed in the server process instead, so no request fails.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

import jwt

from mockflock.oauth.keys import SigningKey

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"


def _worker(connection: Connection) -> None:
    """Sign (kid, pem or None, claims JSON) requests until the pipe closes."""
    from cryptography.hazmat.primitives import serialization

    keys: dict[str, Any] = {}
    while True:
        try:
            kid, pem, payload = connection.recv()
        except (EOFError, OSError):
            return
        if pem is not None:
            keys[kid] = serialization.load_pem_private_key(pem, password=None)
        token = jwt.encode(json.loads(payload), keys[kid], algorithm=ALGORITHM, headers={"kid": kid})
        connection.send(token)


class _Worker:
    def __init__(self, context: multiprocessing.context.SpawnContext) -> None:
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker, args=(child,), name="mockflock-signer", daemon=True)
        self.process.start()
        child.close()
        self.kids: set[str] = set()
        self.pending: asyncio.Future[str] | None = None


class SigningPool:
    """A few signing processes, used from one event loop."""

    def __init__(self, workers: int) -> None:
        self.size = workers
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for _ in range(self.size):
            self._add_worker()
        logger.info("Signing tokens in %d worker processes", self.size)

    def _add_worker(self) -> None:
        assert self._loop is not None
        worker = _Worker(self._context)
        self._loop.add_reader(worker.connection.fileno(), self._on_result, worker)
        self._workers.append(worker)
        self._release(worker)

    async def sign(self, claims: dict[str, Any], key: SigningKey) -> str:
        worker = self._idle.popleft() if self._idle else await self._wait_for_worker()
        pem = None if key.kid in worker.kids else key.private_pem().encode("ascii")
        worker.pending = asyncio.get_running_loop().create_future()
        try:
            worker.connection.send((key.kid, pem, json.dumps(claims)))
            worker.kids.add(key.kid)
            return await worker.pending
        except (OSError, EOFError, _WorkerLost):
            return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def _wait_for_worker(self) -> asyncio.Future[_Worker]:
        assert self._loop is not None
        waiter: asyncio.Future[_Worker] = self._loop.create_future()
        self._waiting.append(waiter)
        return waiter

    def _release(self, worker: _Worker) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _on_result(self, worker: _Worker) -> None:
        pending, worker.pending = worker.pending, None
        try:
            token = worker.connection.recv()
        except (EOFError, OSError):
            self._replace(worker)
            if pending is not None and not pending.done():
                pending.set_exception(_WorkerLost())
            return
        if pending is not None and not pending.done():
            pending.set_result(token)
        self._release(worker)

    def _replace(self, worker: _Worker) -> None:
        assert self._loop is not None
        logger.error("Signing worker %s exited with %s; starting another", worker.process.pid, worker.process.exitcode)
        self._loop.remove_reader(worker.connection.fileno())
        worker.connection.close()
        self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        self._add_worker()

    def close(self) -> None:
        for worker in self._workers:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.connection.fileno())
            worker.connection.close()
        for worker in self._workers:
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.kill()
        self._workers.clear()
        self._idle.clear()


class _WorkerLost(Exception):
    """A signing worker died while it held a request."""
