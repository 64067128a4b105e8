"""Type stub for the native verification core built from operator/native (Rust)."""

# (origin, checkpoint rows (origin, size, root_hash, time, key_id, signature), size,
#  root_hash, root by checkpoint size, sequences whose payload is gone,
#  (sequence, payload) of every tombstone)
Scanned = tuple[
    str,
    list[tuple[str, int, str, str, str, str]],
    int,
    str,
    dict[int, str],
    list[int],
    list[tuple[int, str]],
]

def scan_sqlite(
    sqlite_library: str | None,
    path: str,
    kinds: list[str],
    tombstone: str,
    extra_sizes: list[int],
) -> Scanned | str: ...
