"""Writing an image's non-zero blocks into a started EBS snapshot (EBS direct APIs).

The image is read in batches (``BlockReader.next_batch``) on the cloud door,
one read at a time and only while fewer blocks wait than puts may run; up
to ``limit`` PutSnapshotBlock calls run at once.  The first error stops new
reads and puts and is raised.  Progress runs 0..90: how much of the image
lies before the first block not yet written.  The calls themselves (retries,
tracking, cleanup) are the push's (``ec2_push``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from ..deferreds import Wakeup
from .ec2_blocks import Block, BlockReader

__all__ = ["BlockWriter"]


class BlockWriter:
    """Puts an image's blocks, reading them through ``read`` and putting each through ``put``."""

    def __init__(
        self,
        read: Callable[[BlockReader], Deferred[list[Block]]],
        put: Callable[[Block], Coroutine[Any, Any, None]],
        report: Callable[[int], Awaitable[None]],
        limit: int,
    ) -> None:
        self._read = read
        self._put = put
        self._report = report
        self._limit = limit
        #: How many blocks were put so far.
        self.written = 0

    async def write(self, reader: BlockReader, size: int) -> int:
        """Put every non-zero block of the open ``reader`` (an image of ``size`` bytes); return how many were put.

        Closes the reader when done (once no read of it runs on a door thread).
        """
        queue: deque[Block] = deque()
        in_flight: dict[int, Deferred[None]] = {}
        errors: list[BaseException] = []
        state = Wakeup()
        reading: list[Deferred[list[Block]]] = []
        #: Where the read in flight started: no block before it is still unread.
        read_from = [0]
        in_flight_limit = max(1, self._limit)

        def read_done(result: Any) -> None:
            reading.clear()
            if isinstance(result, Failure):
                errors.append(result.value or Exception("a read failed"))
            else:
                queue.extend(result)
            state.poke()

        def put_done(result: Any, index: int) -> None:
            in_flight.pop(index, None)
            if isinstance(result, Failure):
                if not errors:
                    errors.append(result.value or Exception("a put failed"))
            else:
                self.written += 1
            state.poke()

        try:
            while True:
                state.clear()
                if errors:
                    raise errors[0]
                if not reading and not reader.exhausted and len(queue) < in_flight_limit:
                    read_from[0] = reader.position
                    call = self._read(reader)
                    reading.append(call)
                    call.addBoth(read_done)
                while queue and len(in_flight) < in_flight_limit and not errors:
                    block = queue.popleft()
                    put = ensureDeferred(self._put(block))
                    in_flight[block.index] = put
                    put.addBoth(put_done, block.index)
                if errors:
                    continue
                if not queue and not in_flight and not reading and reader.exhausted:
                    break
                position = read_from[0] if reading else reader.position
                await self._report(self.progress(reader.block_size, position, queue, in_flight, size))
                await state.wait()
        finally:
            if reading:
                # Never close the file under a read running on a door thread.
                reading[0].addBoth(lambda _: reader.close())
            else:
                reader.close()
        await self._report(90)
        return self.written

    @staticmethod
    def progress(
        block_size: int, read_position: int, queue: deque[Block], in_flight: dict[int, Deferred[None]], size: int
    ) -> int:
        """0..90: how much of the image lies before the first block not yet written."""
        frontier = read_position
        if queue:
            frontier = min(frontier, queue[0].index * block_size)
        if in_flight:
            frontier = min(frontier, min(in_flight) * block_size)
        return 90 * min(frontier, size) // max(size, 1)
