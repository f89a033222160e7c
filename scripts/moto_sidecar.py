"""Runs a moto server on a free loopback port for kforge's tests and demo.

Prints the port on the first line of stdout, then serves until its stdin closes: the parent (a test binary or a
script) holds the other end, so the server dies with it even when the parent is killed.
"""
import os
import sys

from moto.server import ThreadedMotoServer


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(port, flush=True)
    try:
        sys.stdin.read()
    finally:
        # Threads of werkzeug may linger; leave at once.
        os._exit(0)


if __name__ == "__main__":
    main()
