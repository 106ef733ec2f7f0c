"""A byte budget shared by the coroutines of one process: each reserves what it needs and waits while the others'
reservations leave too little, so together they never hold more than the limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        """Hold `amount` bytes (at most the limit) for the block, after waiting until they are free."""
        if amount > self.limit:
            raise ValueError(f"{amount} bytes can never fit a budget of {self.limit}")
        async with self.changed:
            await self.changed.wait_for(lambda: self.reserved + amount <= self.limit)
            self.reserved += amount
        try:
            yield
        finally:
            async with self.changed:
                self.reserved -= amount
                self.changed.notify_all()
