"""The audio store of batch jobs: uploads and results. A local directory by default (AUDIOROUTER_DATA_DIR/jobs),
or an S3-compatible bucket (AUDIOROUTER_JOBS_STORE_URL=s3://bucket/prefix, AUDIOROUTER_JOBS_S3_ENDPOINT_URL for
MinIO, R2, Ceph...; credentials from the usual AWS_* variables) so workers on other machines can read them.
The clients are blocking (boto3), so every call runs in a thread."""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class BlobStore:
    async def put_file(self, key: str, path: str | os.PathLike) -> None:
        await asyncio.to_thread(self._put_file, key, Path(path))

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put_bytes, key, data)

    async def move_file(self, key: str, path: str | os.PathLike) -> None:
        """Store the file under `key` and remove it from where it was (a local store renames it when it can;
        S3 uploads it from disk, in parts when big): never read whole into memory."""
        await asyncio.to_thread(self._move_file, key, Path(path))

    def _move_file(self, key: str, path: Path) -> None:
        self._put_file(key, path)
        path.unlink(missing_ok=True)

    async def get_file(self, key: str, path: str | os.PathLike) -> None:
        await asyncio.to_thread(self._get_file, key, Path(path))

    async def get_bytes(self, key: str) -> bytes | None:
        """The object, or None when it does not exist (deleted by retention)."""
        return await asyncio.to_thread(self._get_bytes, key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def describe(self) -> str:
        raise NotImplementedError

    def _put_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def _put_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def _get_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def _get_bytes(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"bad object key {key!r}")
    return key


class LocalBlobs(BlobStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def describe(self) -> str:
        return f"directory {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def _put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)  # readers never see half a file

    def _move_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)  # same file system: a rename, atomic
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            super()._move_file(key, path)  # another file system: copied (streamed) into place, then removed

    def _put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def _get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass


class S3Blobs(BlobStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config
            client = boto3.client("s3", endpoint_url=endpoint_url,
                                  config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                s3={"addressing_style": "path"} if endpoint_url else {}))
        self.client = client

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"bucket s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))  # multipart for big files

    def _put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _get_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(path))

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_blobs(settings: Any) -> BlobStore:
    url = settings.jobs_store_url
    if not url:
        return LocalBlobs(Path(settings.data_dir) / "jobs")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("AUDIOROUTER_JOBS_STORE_URL: s3:// needs a bucket (s3://bucket/prefix)")
        return S3Blobs(parts.netloc, parts.path, settings.jobs_s3_endpoint_url)
    if parts.scheme in ("", "file"):
        return LocalBlobs(Path(parts.path or url).expanduser())
    raise ValueError(f"AUDIOROUTER_JOBS_STORE_URL: {parts.scheme}:// is not supported (a directory or s3://bucket/prefix)")
