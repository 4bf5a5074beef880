"""gunicorn's gthread worker, except that a request gets a thread only once it has arrived.

Contract:
- `BufferingThreadWorker` (gunicorn.conf.py's `worker_class`) reads each request, from new and
  kept-alive connections alike, in the worker's main loop as its bytes come in: the request
  line, the headers, and a body sent with a Content-Length or chunked, up to the body limit.
  Only then does a thread parse and serve it, from memory. A client that trickles its request
  or sends nothing holds a socket, never one of the worker's threads, and is closed once its
  request hasn't arrived within `read_seconds` (REQUEST_READ_SECONDS).
- Handed over at once, and read by the thread as gunicorn would: a body larger than the limit
  (the service answers 413), and a request that asks for `Expect: 100-continue` (its client
  waits for gunicorn's answer before it sends the body).
- Everything else is gunicorn's ThreadWorker unchanged.
"""

import re
import selectors
import time
from functools import partial

from gunicorn import http
from gunicorn.workers.gthread import ThreadWorker

HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,15})[ \t]*\r", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
EXPECT_CONTINUE = re.compile(rb"\r\nexpect:[ \t]*100-continue", re.IGNORECASE)
CHUNK_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,8})[^\r\n]*\r\n")
READ_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024  # gunicorn refuses heads much smaller than this (431); hand it over


def chunked_body_complete(body):
    """Whether a chunked body has arrived whole: every chunk, the last (size 0) and its trailer."""
    position = 0
    while True:
        size_line = CHUNK_SIZE_LINE.match(body, position)
        if size_line is None:
            return False  # not arrived yet; a malformed one is gunicorn's to refuse, at the deadline
        size = int(size_line.group(1), 16)
        position = size_line.end()
        if size == 0:  # then the trailer: nothing, or header lines, and an empty line
            return body.startswith(b"\r\n", position) or body.find(HEAD_END, position) >= 0
        position += size + 2
        if position > len(body):
            return False


def request_arrived(gathered, max_body_bytes):
    """Whether a thread can serve the request in `gathered` without waiting on the network."""
    end = gathered.find(HEAD_END)
    if end < 0:
        return len(gathered) > MAX_HEAD_BYTES
    head, body = b"\r\n" + gathered[: end + 2], gathered[end + 4 :]
    if EXPECT_CONTINUE.search(head) or len(body) > max_body_bytes:
        return True
    if CHUNKED.search(head):
        return chunked_body_complete(body)
    length = CONTENT_LENGTH.search(head)
    if length is None:
        return True  # no body
    return int(length.group(1)) > max_body_bytes or len(body) >= int(length.group(1))


class BufferingThreadWorker(ThreadWorker):
    read_seconds = 10.0  # gunicorn.conf.py's subclass sets both from the settings
    max_body_bytes = 1_000_000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gathering = {}  # connection -> the time by which its request must have arrived

    def enqueue_req(self, conn):
        """gunicorn calls this for a new connection, a kept-alive one that became readable, and
        one with pipelined bytes already read: each first gathers its request here."""
        if getattr(conn, "whole", False):
            conn.whole = False
            super().enqueue_req(conn)
            return
        already_read = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.gathered = bytearray(already_read)
        conn.sock.setblocking(False)  # a pipelined request arrives here from a thread's blocking socket
        # Usually the whole request is already here (the poller said readable, or it came with
        # the connection): then it goes straight to a thread, without another trip to the poller.
        if self.read_what_arrived(conn):
            return
        self.gathering[conn] = time.monotonic() + self.read_seconds
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_bytes_arrived, conn))

    def on_bytes_arrived(self, conn, client):
        self.read_what_arrived(conn)

    def read_what_arrived(self, conn):
        """Read what the socket holds; True once the connection is handed over or closed."""
        while not request_arrived(conn.gathered, self.max_body_bytes):
            try:
                data = conn.sock.recv(READ_BYTES)
            except BlockingIOError:
                return False
            except OSError:
                data = b""
            if not data:  # the client went away
                self.stop_gathering(conn)
                self.nr_conns -= 1
                conn.close()
                return True
            conn.gathered += data
        self.stop_gathering(conn)
        self.hand_over(conn)
        return True

    def hand_over(self, conn):
        if conn.parser is None:  # a new connection: the parser gunicorn would make in TConn.init()
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.gathered))
        conn.gathered = None
        conn.data_ready = True
        conn.whole = True
        self.enqueue_req(conn)

    def stop_gathering(self, conn):
        """Forget a connection's deadline and poller registration, if it had them."""
        if self.gathering.pop(conn, None) is not None:
            self.poller.unregister(conn.sock)

    def murder_pending(self):
        """Also close the connections whose request did not arrive in time (called every loop)."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [conn for conn, deadline in self.gathering.items() if deadline < now]:
            self.stop_gathering(conn)
            self.nr_conns -= 1
            conn.close()
