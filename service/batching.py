"""Opportunistic micro-batching: requests that arrive together are processed together.

scikit-learn's predict_proba costs about the same for 1 row as for 100, and a database
commit about the same for 1 row as for 30, so a worker that is busy with one request does
better to collect the ones that arrive meanwhile and serve them with one call.

There is no thread of its own. The first caller to find the batcher idle runs its own item at
once, so a lone request never waits. Callers that arrive while a batch is running queue up;
when it ends, the oldest of them is woken to run everything queued as the next batch, in its
own thread.

Before a leader takes its batch it may wait, briefly, for requests it has reason to expect:
the clients of the batch just answered send their next request a moment later, and under
steady load waiting for them (at most GATHER_SECONDS) turns two half-size batches into one,
which halves the model calls. A leader waits only when the previous batch ended within the
last GATHER_SECONDS and held more than the leader's queue: a request after a quiet spell,
or from the one client of a one-request batch, is run at once.

GATHER_SECONDS is long enough for the clients to be heard on a busy machine: the requests a
leader waits for must first be read and parsed by other threads of the same worker, which share
its CPU. A few milliseconds was too short on two busy cores (docs/performance.md has the
measurement that chose 20 ms). The price is paid only when an expected client does not come
back: its batch starts up to GATHER_SECONDS late.
"""

import threading
import time

GATHER_SECONDS = 0.02


class _Ticket:
    """One caller's item, and later its result, error or turn to lead."""

    __slots__ = ("item", "result", "error", "finished", "_wake")

    def __init__(self, item):
        self.item = item
        self.result = None
        self.error = None
        self.finished = False
        # A bare lock, held until someone wakes us: much cheaper than an Event's Condition.
        self._wake = threading.Lock()
        self._wake.acquire()

    def wait(self):
        self._wake.acquire()

    def wake(self):
        self._wake.release()


class MicroBatcher:
    """Calls process_batch(items) -> results (one per item, in order) for waiting callers."""

    def __init__(self, process_batch, max_batch_size=64):
        self._process_batch = process_batch
        self._max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self._queue = []
        self._running = False
        self._last_batch_size = 0
        self._last_batch_end = float("-inf")
        self._gate = None  # while a leader waits: (lock it waits on, queue length that opens it)

    def submit(self, item):
        """Process item, alone or with others that arrived meanwhile; return its result."""
        ticket = _Ticket(item)
        with self._lock:
            self._queue.append(ticket)
            leads = not self._running
            self._running = True
            if self._gate is not None and len(self._queue) >= self._gate[1]:
                self._gate[0].release()  # the leader was waiting for this many
                self._gate = None
        if not leads:
            ticket.wait()  # woken with our result, or because it is our turn to lead
        if not ticket.finished:
            self._run_one_batch(handed_over=not leads)
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _expected_batch_size(self, handed_over):
        """How many queued requests a leader can expect shortly; called under the lock."""
        if time.monotonic() - self._last_batch_end > GATHER_SECONDS:
            return 1  # no batch just ended: nobody is about to come back
        # A handed-over leader expects those queued meanwhile plus the clients just answered; a
        # leader that found us idle is most likely one of those clients itself.
        queued_meanwhile = len(self._queue) if handed_over else 0
        return min(queued_meanwhile + self._last_batch_size, self._max_batch_size)

    def _let_arrivals_queue(self, handed_over):
        """Wait, at most GATHER_SECONDS, until the queue holds the batch we expect."""
        with self._lock:
            expected = self._expected_batch_size(handed_over)
            if len(self._queue) >= expected:
                return
            gate = threading.Lock()
            gate.acquire()
            self._gate = (gate, expected)
        gate.acquire(timeout=GATHER_SECONDS)
        with self._lock:
            self._gate = None

    def _run_one_batch(self, handed_over):
        # The leader is always the oldest queued ticket, so its own item is in the batch.
        self._let_arrivals_queue(handed_over)
        with self._lock:
            batch = self._queue[: self._max_batch_size]
            del self._queue[: self._max_batch_size]
            self._last_batch_size = len(batch)
        try:
            results = self._process_batch([ticket.item for ticket in batch])
            for ticket, result in zip(batch, results, strict=True):
                ticket.result = result
        except BaseException as exc:  # every caller in the batch learns of the failure
            for ticket in batch:
                ticket.error = exc
        finally:
            with self._lock:
                for ticket in batch:
                    ticket.finished = True
                next_leader = self._queue[0] if self._queue else None
                self._last_batch_end = time.monotonic()
                self._running = next_leader is not None
            for ticket in batch:
                ticket.wake()
            if next_leader is not None:
                next_leader.wake()
