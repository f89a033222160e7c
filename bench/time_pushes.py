"""Times kforge and skopeo pushing the same OCI layout to fresh repositories of one registry, alternating, and
prints the figures of bench/push-image: best-of-N times, kforge ÷ skopeo, kforge's peak RSS, re-push time."""

import argparse
import http.client
import os
import shutil
import sys
import time


def run_rss(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    took = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed; run it by hand to see why")
    return took, usage.ru_maxrss


def clear_blobs(storage: str) -> None:
    # Blobs are global to a registry's storage: without this, the second tool's push would find them present.
    shutil.rmtree(storage, ignore_errors=True)


def raw_upload(registry: str, path: str, digest: str) -> float:
    """The registry's own floor: one POST + one PATCH streaming the blob from disk (1 MiB writes) + the PUT, with
    no hashing or anything else on the client side."""
    host, port = registry.split(":")
    conn = http.client.HTTPConnection(host, int(port), blocksize=1 << 20)
    start = time.perf_counter()
    conn.request("POST", "/v2/floor/blobs/uploads/", headers={"Content-Length": "0"})
    r = conn.getresponse()
    r.read()
    location = r.getheader("Location")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        conn.request(
            "PATCH",
            location,
            body=f,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        r = conn.getresponse()
        r.read()
    location = r.getheader("Location")
    sep = "&" if "?" in location else "?"
    conn.request("PUT", f"{location}{sep}digest={digest}", headers={"Content-Length": "0"})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"raw upload failed: {r.status}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kforge", required=True)
    p.add_argument("--layout", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    size = sum(
        os.path.getsize(os.path.join(a.layout, "blobs", "sha256", f))
        for f in os.listdir(os.path.join(a.layout, "blobs", "sha256"))
    )
    kforge_times, skopeo_times, rss = [], [], []
    for i in range(a.rounds):
        clear_blobs(a.storage)
        t, r = run_rss([a.kforge, "push", "image", f"oci:{a.layout}:bench", f"{a.registry}/kforge{i}:bench", "--insecure", "-q"])
        kforge_times.append(t)
        rss.append(r)
        clear_blobs(a.storage)
        t, _ = run_rss(
            [
                "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                f"oci:{a.layout}:bench", f"docker://{a.registry}/skopeo{i}:bench",
            ]
        )
        skopeo_times.append(t)
        print(f"round {i + 1}: kforge {kforge_times[-1]:.2f}s  skopeo {skopeo_times[-1]:.2f}s", flush=True)

    # Re-push of an image the registry has in full (pushed right before, nothing cleared in between).
    run_rss([a.kforge, "push", "image", f"oci:{a.layout}:bench", f"{a.registry}/repush:bench", "--insecure", "-q"])
    repush, _ = run_rss([a.kforge, "push", "image", f"oci:{a.layout}:bench", f"{a.registry}/repush:bench", "--insecure", "-q"])

    # What the registry itself allows: the big layer alone, streamed with nothing else going on.
    blobs = os.path.join(a.layout, "blobs", "sha256")
    big = max(os.listdir(blobs), key=lambda f: os.path.getsize(os.path.join(blobs, f)))
    floors = []
    for _ in range(a.rounds):
        clear_blobs(a.storage)
        floors.append(raw_upload(a.registry, os.path.join(blobs, big), "sha256:" + big))
    floor = min(floors)

    k, s = min(kforge_times), min(skopeo_times)
    mib = size / (1 << 20)
    print(f"image: {mib:.0f} MiB in 5 blobs")
    print(f"kforge push: {k:.2f}s ({mib / k:.0f} MiB/s)  skopeo copy: {s:.2f}s ({mib / s:.0f} MiB/s)  (best of {a.rounds})")
    print(f"kforge / skopeo = {k / s:.2f}  (target <= 0.8)")
    print(f"kforge peak RSS = {max(rss) / 1024:.1f} MiB  (target < 100 MiB)")
    print(f"kforge re-push (all blobs present) = {repush:.2f}s")
    print(
        f"registry floor: the big layer alone in one raw PATCH = {floor:.2f}s, so no client can do better than "
        f"{floor / s:.2f} x skopeo against this registry"
    )


if __name__ == "__main__":
    main()
