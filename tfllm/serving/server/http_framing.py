"""How `tfllm serve`'s REST side reads a request off a socket: a read deadline (no slow-loris client
holds a thread forever) and RFC 9112's rules on the headers that frame a body."""

import io
import socket
import time

REQUEST_TIMEOUT_BODY = b'{"error": "Request timeout: the request did not arrive in time"}'


class RequestTimeout(Exception):
    """A request's headers and body did not all arrive before the read deadline (answered 408).

    Deliberately not a `TimeoutError`: `http.server` swallows those without an answer.
    """


class DeadlineReader(io.RawIOBase):
    """The raw reader of a connection: waits up to `idle_seconds` for a request's first byte, then
    gives the whole request (headers and body) until `deadline`.

    Args:
        sock: the connection.
        idle_seconds: how long a keep-alive connection may wait for its next request.
    """

    def __init__(self, sock, idle_seconds):
        super().__init__()
        self.sock = sock
        self.idle_seconds = idle_seconds
        self.deadline = None  # time.monotonic() by which the request must have arrived; None while idle

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.deadline is None:
            self.sock.settimeout(self.idle_seconds)
            return self.sock.recv_into(buffer)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout()
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv_into(buffer)
        except socket.timeout as error:
            raise RequestTimeout() from error


def framing_problem(headers):
    """What makes a request's body framing ambiguous (RFC 9112 section 6.3), or None.

    Two different Content-Length values, one that is not a number, or Content-Length together with
    Transfer-Encoding could be read differently by a proxy in front: they are refused (400).
    """
    lengths = {value.strip() for header in headers.get_all("Content-Length") or [] for value in header.split(",")}
    encoding = headers.get("Transfer-Encoding")
    if len(lengths) > 1:
        return f"Conflicting Content-Length headers: {', '.join(sorted(lengths))}"
    if lengths and not next(iter(lengths)).isdigit():
        return f"Invalid Content-Length: {next(iter(lengths))!r}"
    if encoding is not None and lengths:
        return "A request may not have both Content-Length and Transfer-Encoding"
    if encoding is not None and encoding.strip().lower() != "chunked":
        return f"Unsupported Transfer-Encoding: {encoding!r} (only chunked)"
    return None


def client_gone(sock):
    """Whether the peer of a connection has closed it (EOF waiting, without consuming data)."""
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        finally:
            sock.settimeout(timeout)
    except BlockingIOError:
        return False  # nothing to read: still connected
    except OSError:
        return True
