"""The NATS services protocol (what ``nats.micro`` and the ``nats micro`` CLI
speak): discovery and monitoring of a running service instance.

Every instance answers, outside any queue group, on ``$SRV.<VERB>``,
``$SRV.<VERB>.<name>`` and ``$SRV.<VERB>.<name>.<id>`` for the verbs PING, INFO
and STATS, with JSON documents of types ``io.nats.micro.v1.ping_response``,
``info_response`` and ``stats_response``. STATS carries each endpoint's request
and error counts, processing time in nanoseconds, and (as ``data``) its HDR
latency summary.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from peregrine.mq.worker import Worker

VERBS = ("PING", "INFO", "STATS")


class ServicesProtocol:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._subs: list[Any] = []

    async def start(self) -> None:
        service, nc = self.worker.service, self.worker.nc
        for verb in VERBS:
            for subject in (f"$SRV.{verb}", f"$SRV.{verb}.{service.name}",
                            f"$SRV.{verb}.{service.name}.{self.worker.id}"):
                self._subs.append(await nc.subscribe(subject, cb=self._answerer(verb)))

    def _answerer(self, verb: str) -> Any:
        async def answer(msg: Any) -> None:
            if msg.reply:
                await self.worker.nc.publish(msg.reply, orjson.dumps(self.document(verb)))

        return answer

    def document(self, verb: str) -> dict[str, Any]:
        w, service = self.worker, self.worker.service
        base = {"name": service.name, "id": w.id, "version": service.version,
                "metadata": service.metadata}
        if verb == "PING":
            return {"type": "io.nats.micro.v1.ping_response", **base}
        if verb == "INFO":
            return {"type": "io.nats.micro.v1.info_response", **base,
                    "description": service.description,
                    "endpoints": [{"name": e.name, "subject": e.subject,
                                   "queue_group": e.queue_group, "metadata": e.metadata}
                                  for e in service.endpoints]}
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(w.started)) + \
            f".{int(w.started % 1 * 1000):03d}Z"
        return {"type": "io.nats.micro.v1.stats_response", **base, "started": started,
                "endpoints": [w.endpoint_stats[e.name].document() for e in service.endpoints]}

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
