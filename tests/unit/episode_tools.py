"""Tool functions for tests/unit/test_episode_tools.py (the sandbox imports them by module and name)."""
from __future__ import annotations


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    print("printed output does not get in the way")
    return a + b


def nap(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: how long
    """
    import time
    time.sleep(seconds)
    return "awake"


def hog(megabytes: int) -> int:
    """Allocate memory.

    Args:
        megabytes: how much
    """
    return len(bytearray(megabytes * 1024 * 1024))


def dial(port: int, raw: bool) -> str:
    """Connect to a port on this machine.

    Args:
        port: the port on 127.0.0.1
        raw: bypass the socket module's class (as C code would)
    """
    import _socket
    import socket
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) if raw else socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
    return "connected"


def undocumented(x):
    return x


def peek(name: str) -> str:
    """Read an environment variable and write a file.

    Args:
        name: the variable
    """
    import os
    open("scratch.txt", "w").write("x")
    return f"{os.environ.get(name)} in {os.getcwd()}"


def chatter(n: int) -> str:
    """A long answer.

    Args:
        n: its length
    """
    return "y" * n
