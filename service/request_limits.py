"""The body limit, whatever the transfer encoding, and a 413 the client can read.

Contract:
- `read_body(request, limit)` returns the body, or raises werkzeug's RequestEntityTooLarge
  when it is longer than `limit` bytes. Werkzeug refuses a Content-Length over the limit before
  reading anything, but stops reading a chunked body at the limit and hands over what it read,
  so a chunked body is checked for one byte more.
- `discard_rest(environ, at_most=32 MiB)` reads and throws away what is left of the body, up to
  `at_most` bytes. A client that sends its whole body before reading the answer (Python's
  urllib does) gets a connection reset instead of the 413 if the server answers and closes
  with the body unread; draining first lets it read the 413. A body longer than `at_most` is
  not drained: the connection is closed on it.
"""

from werkzeug.exceptions import RequestEntityTooLarge

CHUNK_BYTES = 64 * 1024
DISCARD_AT_MOST_BYTES = 32 * 2**20  # of a body over the limit, read before answering 413


def read_body(request, limit):
    data = request.get_data(cache=True)
    if len(data) >= limit and request.content_length is None and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def discard_rest(environ, at_most=DISCARD_AT_MOST_BYTES):
    stream = environ.get("wsgi.input")
    left = at_most
    while stream is not None and left > 0:
        chunk = stream.read(min(CHUNK_BYTES, left))
        if not chunk:
            return True
        left -= len(chunk)
    return stream is None or not stream.read(1)
