"""Expensive reads that many clients ask for at once, computed once for all of them.

Contract:
- `Coalescer(max_age_seconds).call(key, compute)` returns `compute()`'s result (or raises its
  exception), or the result of a computation of the same key that started at most
  `max_age_seconds` ago (0: never an earlier one). The caller can tell from the result itself
  (/stats puts its `as_of` in every answer).
- In one process, one computation runs at a time, whatever its key: a flood of /stats callers
  holds one database connection and at most one thread's worth of CPU per worker, and leaves the
  rest to /predict; with the reuse, it costs at most one computation per key per max_age.
- Past its age, a caller never gets a result computed from an older state than the one it
  arrived at: it joins a computation of the same key that has not started yet, or waits for the
  running one to end and starts (or joins) the next. Everyone waiting for the same key shares
  that computation, so N callers cost one computation per round, not N.
- It keeps a result only while it may be reused (max_age_seconds): keys a client makes up
  (/stats?hours=1.01, 1.02, ...) cost no memory past that.
- `Pacer(rate, burst, most_waiting).wait_turn()` spaces answers out past a burst, so callers in
  a tight loop can't take the CPU either; False means too many wait already (answer 429).
"""

import threading
import time


class Round:
    """One computation of one key, and the callers waiting for it."""

    def __init__(self):
        self.done = threading.Event()
        self.started = None
        self.result = None
        self.error = None


class Coalescer:
    def __init__(self, max_age_seconds):
        self.max_age = max_age_seconds
        self.running = threading.Lock()  # held by the one computation at work
        self.guard = threading.Lock()  # protects `waiting` and `latest`
        self.waiting = {}  # key -> the Round not started yet, which new callers join
        self.latest = {}  # key -> the last Round that succeeded

    def call(self, key, compute):
        with self.guard:
            recent = self.latest.get(key)
            if recent is not None and time.monotonic() - recent.started <= self.max_age:
                return recent.result
            leader = key not in self.waiting
            round = self.waiting.setdefault(key, Round())
        if leader:
            self.lead(key, round, compute)
        round.done.wait()
        if round.error is not None:
            raise round.error
        return round.result

    def lead(self, key, round, compute):
        with self.running:
            with self.guard:
                del self.waiting[key]  # callers from now on wait for the next round
            round.started = time.monotonic()
            try:
                round.result = compute()
            except BaseException as exc:  # every caller of this round gets it
                round.error = exc
            else:
                with self.guard:
                    self.forget_older_than(round.started - self.max_age)
                    if self.max_age > 0:
                        self.latest[key] = round
            finally:
                round.done.set()

    def forget_older_than(self, moment):
        """Drop the results no caller may be given any more (under the guard)."""
        expired = [key for key, round in self.latest.items() if round.started < moment]
        for key in expired:
            del self.latest[key]


class Pacer:
    """At most `rate` answers a second in this process, after a burst of `burst`: a caller past
    them waits its turn (sleeping costs no CPU), so a client calling in a tight loop is slowed to
    the rate instead of taking the CPU from /predict. `wait_turn()` returns False, without
    waiting, when `most_waiting` callers wait already: each holds one of gunicorn's threads."""

    def __init__(self, rate, burst, most_waiting):
        self.rate, self.burst, self.most_waiting = rate, burst, most_waiting
        self.lock = threading.Lock()
        self.tokens, self.updated, self.waiting = float(burst), time.monotonic(), 0

    def wait_turn(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1 and self.waiting >= self.most_waiting:
                return False
            self.tokens -= 1  # below zero: a turn reserved in the future, after those before it
            delay = max(0.0, -self.tokens / self.rate)
            self.waiting += delay > 0
        if delay > 0:
            time.sleep(delay)
            with self.lock:
                self.waiting -= 1
        return True
