"""Which JSON parser reads LCCC byte ranges fastest: orjson, msgspec, pysimdjson, ijson (yajl2_c).

Each parser turns the bytes of an LCCC file (a list of lists of strings) into Python lists: the whole
file, then the file cut into the byte ranges the dialog job reads (`--range-bytes`, 4 MiB), where
the job also needs the type check (every dialogue a list of strings): msgspec typed as
list[list[str]] does both in C; orjson needs a Python pass for it. CPU time of one thread, best of
`--repeat`.
    .venv/bin/python benchmarks/lccc_parsers.py FILE [FILE ...]
"""
from __future__ import annotations

import argparse
import io
import os
import time

import common  # noqa: F401
from common import emit, print_table, result


def parsers():
    import ijson
    import msgspec
    import orjson
    import simdjson

    simd = simdjson.Parser()
    decoder = msgspec.json.Decoder()
    return {
        "orjson": orjson.loads,
        "msgspec": decoder.decode,
        "msgspec typed list[list[str]]": msgspec.json.Decoder(list[list[str]]).decode,
        "pysimdjson": lambda b: simd.parse(b).as_list(),
        "ijson (yajl2_c)": lambda b: list(ijson.items(io.BytesIO(b), "item", use_float=True)),
    }


def ranged(path: str, range_bytes: int, repeat: int) -> list[dict]:
    import msgspec
    import orjson

    from liaotian.pipelines.readers import lccc_plan

    data = open(path, "rb").read()
    chunks = [b"[" + data[r.start:r.end] + b"]" for r in lccc_plan(path, range_bytes)[None]]
    typed = msgspec.json.Decoder(list[list[str]])

    def checked(values):
        if not all(type(d) is list and all(type(u) is str for u in d) for d in values):
            raise ValueError("not a list of strings")

    ways = {"msgspec typed list[list[str]]": typed.decode, "orjson + check in Python": lambda b: checked(orjson.loads(b)),
            "orjson, no check": orjson.loads}
    times = {}
    for name, parse in ways.items():
        best = float("inf")
        for _ in range(repeat):
            t = time.process_time()
            for c in chunks:
                parse(c)
            best = min(best, time.process_time() - t)
        times[name] = best
    mb = len(data) / 2**20
    anchor = "orjson + check in Python"
    return [result(f"{os.path.basename(path)} {range_bytes >> 20} MiB ranges {name}", mb / s, "MiB/s", anchor, mb / times[anchor])
            for name, s in times.items()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--range-bytes", type=int, default=4 << 20)
    args = ap.parse_args(argv)
    rows = []
    for path in args.files:
        data = open(path, "rb").read()
        times = {}
        for name, parse in parsers().items():
            best = float("inf")
            for _ in range(args.repeat):
                t = time.process_time()
                value = parse(data)
                best = min(best, time.process_time() - t)
                del value
            times[name] = best
        mb = len(data) / 2**20
        for name, s in times.items():
            rows.append(result(f"{os.path.basename(path)} {name}", mb / s, "MiB/s", "ijson (yajl2_c)", mb / times["ijson (yajl2_c)"]))
    for path in args.files:
        rows += ranged(path, args.range_bytes, args.repeat)
    print_table("benchmarks/lccc_parsers.py: LCCC bytes -> Python lists (CPU time, 1 thread)", rows,
                [f"load average {os.getloadavg()}"])
    emit("lccc_parsers", rows)


if __name__ == "__main__":
    main()
