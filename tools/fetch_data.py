"""Download benchmark TSVs from where VLMEvalKit publishes them into $LMUData, checking each file's MD5.

    python tools/fetch_data.py MMStar POPE                 # into $LMUData (default ~/LMUData)
    python tools/fetch_data.py MMStar --root /data/LMUData
    python tools/fetch_data.py MMStar --mirror http://host/files   # <mirror>/MMStar.tsv, same MD5

The URLs and MD5 sums are `vlmeval_ivcp.datasets.sources.PUBLISHED`. A download goes to `<Name>.tsv.part` and
becomes `<Name>.tsv` only when its MD5 matches; a `.part` left by an interrupted download is resumed with an HTTP
range request (from the start when the server does not honour ranges). A file already in place with the right MD5
is kept; one with another MD5 is refused unless `--force`. Exit status: 0 when every file is in place, 1 when a
download failed (each failure is one line), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from vlmeval_ivcp.datasets.sources import PUBLISHED, Source, how_to_get
from vlmeval_ivcp.datasets.tsv import lmu_root

CHUNK = 1 << 20
TIMEOUT_S = 60


class FetchError(Exception):
    """A download that did not produce the right file; the message is one line naming the file and URL."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the partial file already holds every byte
            return None
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        host = urllib.parse.urlsplit(url).netloc
        raise FetchError(f"cannot reach {host} ({reason}): offline? download {url} by hand") from None


def download(url: str, part: Path) -> None:
    """Appends the bytes of `url` that `part` lacks (all of them when the server ignores the range request)."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset)
    if response is None:
        return
    with response:
        resumed = offset > 0 and response.status == 206
        length = response.headers.get("Content-Length")
        start = offset if resumed else 0
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")]
        ) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as error:
                raise FetchError(f"{url}: the download broke off ({error}); run again to resume") from None


def fetch(name: str, source: Source, root: Path, force: bool = False) -> str:
    """Puts `<root>/<name>.tsv` in place from `source`; returns what was done (one line)."""
    target = root / f"{name}.tsv"
    if target.exists():
        found = md5_of(target)
        if found == source.md5:
            return f"{target}: already there, MD5 {found} matches"
        if not force:
            raise FetchError(f"{target} exists with MD5 {found}, not the published {source.md5}; --force replaces it")
    root.mkdir(parents=True, exist_ok=True)
    part = root / f"{name}.tsv.part"
    download(source.url, part)
    found = md5_of(part)
    if found != source.md5:
        part.unlink()
        raise FetchError(
            f"{source.url}: MD5 {found} is not the published {source.md5}; the download was removed, run again "
            "(or check the mirror)"
        )
    os.replace(part, target)
    return f"{target}: downloaded, MD5 {found} matches"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download benchmark TSVs that VLMEvalKit publishes into $LMUData (MD5 checked, resumable).",
        epilog=f"Known names: {' '.join(sorted(PUBLISHED))}",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="benchmark name(s), e.g. MMStar POPE")
    parser.add_argument("--root", help="data folder (default $LMUData, else ~/LMUData)")
    parser.add_argument("--mirror", help="base URL that serves <NAME>.tsv instead of VLMEvalKit's host")
    parser.add_argument("--md5", help="expected MD5 of a re-published file (only with a single NAME)")
    parser.add_argument("--force", action="store_true", help="replace a file in place whose MD5 differs")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in PUBLISHED]
    if unknown:
        root = args.root or lmu_root()
        lines = [f"{name}: not published by VLMEvalKit; {how_to_get(name, root)}" for name in unknown]
        parser.error("\n".join(lines))
    if args.md5 and len(args.names) != 1:
        parser.error("--md5 goes with a single NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.root).expanduser() if args.root else lmu_root()
    failed = 0
    for name in args.names:
        source = PUBLISHED[name]
        if args.mirror:
            source = Source(f"{args.mirror.rstrip('/')}/{name}.tsv", source.md5)
        if args.md5:
            source = Source(source.url, args.md5.lower())
        try:
            print(fetch(name, source, root, args.force))
        except (FetchError, OSError) as error:
            print(f"fetch_data.py: error: {name}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
