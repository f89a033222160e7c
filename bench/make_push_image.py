"""Writes the push benchmark's image as an OCI layout: a small base layer, a BIG_MIB MiB layer of gzip-compressed
random bytes, and a small top layer, all real gzip'd tars. Usage: make_push_image.py DIR BIG_MIB"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def main(out: str, big_mib: int) -> None:
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest

    def put_file(path: str) -> tuple[str, int]:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        os.replace(path, os.path.join(blobs, h.hexdigest()))
        return "sha256:" + h.hexdigest(), os.path.getsize(os.path.join(blobs, h.hexdigest()))

    def small_layer(name: str, size: int) -> tuple[bytes, bytes]:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as t:
            info = tarfile.TarInfo(name)
            info.size = size
            t.addfile(info, io.BytesIO(os.urandom(size)))
        tar = raw.getvalue()
        return tar, gzip.compress(tar, compresslevel=1, mtime=0)

    layers = []
    diff_ids = []
    base_tar, base_gz = small_layer("base.bin", 1 << 20)
    layers.append((put(base_gz), len(base_gz)))
    diff_ids.append("sha256:" + hashlib.sha256(base_tar).hexdigest())

    # The big layer is streamed to disk: a tar of one random file, gzip'd, hashing both forms on the way.
    size = big_mib << 20
    tmp = os.path.join(out, "big.tmp")
    diff = hashlib.sha256()

    class Tee(io.RawIOBase):
        def __init__(self, gz):
            self.gz = gz

        def write(self, b):
            diff.update(b)
            self.gz.write(b)
            return len(b)

        def writable(self):
            return True

    with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0) as gz:
        with tarfile.open(fileobj=Tee(gz), mode="w|") as t:
            info = tarfile.TarInfo("model.bin")
            info.size = size

            class Random(io.RawIOBase):
                left = size

                def readinto(self, b):
                    n = min(len(b), self.left)
                    b[:n] = os.urandom(n)
                    self.left -= n
                    return n

                def readable(self):
                    return True

            t.addfile(info, io.BufferedReader(Random(), 1 << 20))
    layers.append(put_file(tmp))
    diff_ids.append("sha256:" + diff.hexdigest())

    top_tar, top_gz = small_layer("app.bin", 64 << 10)
    layers.append((put(top_gz), len(top_gz)))
    diff_ids.append("sha256:" + hashlib.sha256(top_tar).hexdigest())

    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s} for d, s in layers
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "bench"},
            }
        ],
    }
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
