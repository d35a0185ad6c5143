import asyncio

from coordinator.consensus.barrier import ReadBarrier


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


class SlowBarrier:
    def __init__(self):
        self.started = 0
        self.release = asyncio.Event()
        self.index = 100

    async def __call__(self):
        self.started += 1
        await self.release.wait()
        self.release.clear()
        self.index += 1
        return self.index


async def test_reads_waiting_at_one_moment_share_one_barrier_and_later_reads_wait_for_the_next():
    propose = SlowBarrier()
    barrier = ReadBarrier(propose)
    first = [asyncio.create_task(barrier.wait()) for _ in range(10)]
    await settle()
    assert propose.started == 1
    # These arrive while the first barrier is in flight: they must not be
    # served by it (it may have been proposed before their writes committed).
    second = [asyncio.create_task(barrier.wait()) for _ in range(10)]
    await settle()
    assert propose.started == 1
    propose.release.set()
    assert set(await asyncio.gather(*first)) == {101}
    await settle()
    assert propose.started == 2
    propose.release.set()
    assert set(await asyncio.gather(*second)) == {102}
    assert barrier.barriers == 2 and barrier.reads == 20


async def test_a_failed_barrier_fails_its_reads_and_the_next_one_runs():
    calls = []

    async def propose():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("lost leadership")
        return 7

    barrier = ReadBarrier(propose)
    try:
        await barrier.wait()
    except RuntimeError as exc:
        assert "lost leadership" in str(exc)
    else:
        raise AssertionError("the failed barrier must fail its reads")
    assert await barrier.wait() == 7
