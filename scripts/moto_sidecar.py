"""Runs a moto server on a free loopback port for kforge's tests and demo.

Prints the port on the first line of stdout, then serves until its stdin closes: the parent (a test binary or a
script) holds the other end, so the server dies with it even when the parent is killed.
"""
import os
import sys

from moto.server import ThreadedMotoServer


def patch_launch_template_versions() -> None:
    """moto 5.2 keeps the UserData of a version made by CreateLaunchTemplateVersion as a plain string, then fails
    an assertion (HTTP 500) when an Auto Scaling group launches from that version (a replacement after
    TerminateInstanceInAutoScalingGroup): the data is wrapped as moto's other paths do. A fix to the emulator, not
    to what kforge sends (real EC2 takes the same request)."""
    from moto.core.types import Base64EncodedString
    from moto.ec2.models.launch_templates import LaunchTemplateVersion

    original = LaunchTemplateVersion.user_data.fget

    def user_data(self):  # type: ignore[no-untyped-def]
        raw = self.data.get("UserData")
        if isinstance(raw, str):
            self.data["UserData"] = Base64EncodedString(raw)
        return original(self)

    LaunchTemplateVersion.user_data = property(user_data)


def patch_conditional_puts() -> None:
    """moto checks a PutObject's If-Match / If-None-Match and then writes, with other requests' threads free to run
    in between, so two conditional writes against one ETag can both succeed; S3 makes the check and the write one
    step (kforge's stale-lock takeover depends on it, and a test races two runs for it). Conditional PutObjects
    are serialized here; a fix to the emulator, not to what kforge sends."""
    import threading

    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self):  # type: ignore[no-untyped-def]
        if self.headers.get("If-Match") or self.headers.get("If-None-Match"):
            with lock:
                return original(self)
        return original(self)

    S3Response.put_object = put_object


def main() -> None:
    patch_launch_template_versions()
    patch_conditional_puts()
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
