"""The operator's API request limiter (kube.RequestLanes): worker Job creations waiting for a
connection go before status patches, and a cancelled waiter gives its turn back."""

from __future__ import annotations

import asyncio

from mediaflow_operator.kube import RequestLanes


async def _request(lanes: RequestLanes, name: str, urgent: bool, order: list[str], release: asyncio.Event):
    async with lanes.slot(urgent=urgent):
        order.append(name)
        await release.wait()


async def test_urgent_waiters_are_served_before_routine_ones_and_each_lane_in_order():
    lanes, order, release = RequestLanes(limit=1), [], asyncio.Event()
    first = asyncio.create_task(_request(lanes, "patch-0", False, order, release))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(_request(lanes, name, urgent, order, release))
               for name, urgent in [("patch-1", False), ("create-1", True), ("patch-2", False), ("create-2", True)]]
    await asyncio.sleep(0)
    assert order == ["patch-0"]  # one slot: the others wait
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
    assert order == ["patch-0", "create-1", "create-2", "patch-1", "patch-2"]


async def test_at_most_limit_requests_hold_a_slot():
    lanes, order, release = RequestLanes(limit=3), [], asyncio.Event()
    tasks = [asyncio.create_task(_request(lanes, f"r{i}", i % 2 == 0, order, release)) for i in range(7)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(order) == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(order) == [f"r{i}" for i in range(7)]


async def test_a_cancelled_waiter_leaves_no_slot_taken():
    lanes, order, release = RequestLanes(limit=1), [], asyncio.Event()
    holder = asyncio.create_task(_request(lanes, "holder", False, order, release))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_request(lanes, "gone", True, order, release))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await holder
    assert gone.cancelled()
    # The slot came back: a new request gets it at once, and then the limiter is idle again.
    await asyncio.wait_for(_request(lanes, "after", False, order, release), 1)
    assert order == ["holder", "after"] and lanes._free == 1


async def test_a_waiter_cancelled_just_as_it_was_handed_the_slot_passes_it_on():
    lanes, order, release = RequestLanes(limit=1), [], asyncio.Event()
    release.set()
    async with lanes.slot(urgent=False):
        unlucky = asyncio.create_task(_request(lanes, "unlucky", True, order, release))
        next_in_line = asyncio.create_task(_request(lanes, "next", False, order, release))
        await asyncio.sleep(0)  # both wait
    # Leaving the block handed the slot to "unlucky"; it is cancelled before it could run.
    unlucky.cancel()
    await asyncio.wait_for(next_in_line, 1)
    await asyncio.gather(unlucky, return_exceptions=True)
    assert unlucky.cancelled() and order == ["next"] and lanes._free == 1
