"""Long fuzz run over model files (issue 15); a script, not a test.

    python benchmarks/fuzz_models.py [--cases 5000] [--seed 0] [--bytes-share 0.3]

Each case takes one of the small model files of ``tests/_model_fuzz.py`` (convolution,
recurrent, Embedding, int8, CSR, tabular) and either replaces / deletes / grows one manifest
value (chosen uniformly over every path of the manifest) or overwrites a few bytes of the
file, then loads it with ``lepton_nn.load``, ``lepton_nn.runtime.load`` (and, for value
mutations, ``runtime.from_manifest`` in memory) and runs what loaded on an input of its
declared shape. Prints the cases tried, the count of each outcome per loader and, for any
outcome other than a result or ``ModelFormatError``, the first examples; exits 1 if any.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _model_fuzz import HOSTILE, UNBOUNDED, file_bytes, models, mutate, outcome, paths  # noqa: E402


def _value(rng: random.Random):
    r = rng.random()
    if r < 0.6:
        return rng.choice(HOSTILE + UNBOUNDED)
    if r < 0.75:
        return rng.randint(-(2**63), 2**63 - 1)
    if r < 0.9:
        return rng.uniform(-1e6, 1e6)
    return [rng.choice([None, 0, 1, 3, 2**40]) for _ in range(rng.randint(0, 4))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bytes-share", type=float, default=0.3)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    cases = models()
    names = sorted(cases)
    blobs = {n: file_bytes(n) for n in names}
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes: list[tuple[str, str, str]] = []
    start = time.perf_counter()
    for i in range(args.cases):
        name = rng.choice(names)
        if rng.random() < args.bytes_share:
            data = bytearray(blobs[name])
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            what, result = f"{name}: bytes", outcome({}, {}, bytes(data))
        else:
            manifest, arrays = cases[name]
            every = paths(manifest)
            path = every[rng.randrange(len(every))]
            how = rng.choice(["replace", "replace", "delete", "append"])
            value = _value(rng)
            what = f"{name}: {how} {'/'.join(map(str, path))} = {value!r:.60}"
            result = outcome(mutate(manifest, path, how, value), arrays)
        for loader, got in result.items():
            key = got if got in ("ok", "ModelFormatError") else got.split(":")[0]
            counts[loader][key] += 1
            if key not in ("ok", "ModelFormatError"):
                crashes.append((what, loader, got))
        if (i + 1) % 500 == 0:
            print(f"  {i + 1} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"cases tried: {args.cases} (seed {args.seed}), {time.perf_counter() - start:.1f} s")
    for loader in sorted(counts):
        line = ", ".join(f"{k}: {v}" for k, v in counts[loader].most_common())
        print(f"  {loader:16s} {line}")
    print(f"outcomes other than a result or ModelFormatError: {len(crashes)}")
    for what, loader, got in crashes[:20]:
        print(f"  {loader}: {what}\n      -> {got}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
