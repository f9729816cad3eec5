"""Peak memory of streaming PCA collection against the number of samples N.

Each N runs in a fresh process (peak RSS is per process) with the shipped Shapes model and no cache:
collection of h over N samples and the per-step incremental PCA. The streaming state is bounded by
    T * (k + p + 2) * D_h float64       (axes, mean, variance of each step's IncrementalPCA)
  + (b + k + p) * T * D_h float64       (rows waiting for the next partial_fit)
  + b * T * D_h float32                 (one collected batch)
  + one partial_fit workspace per step, about 2 * (k + p + b + 1) * D_h float64,
none of which depends on N.

    python scripts/bench_pca_memory.py [--steps 10] [--n 128 512 1024 4096]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hspace.checks import integer
from hspace.child_process import run_to_end
from hspace.cli import user_errors_exit

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from hspace.diffusion.loading import load_model
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.pca import PCA
n, steps, k, p, b = map(int, sys.argv[1:6])
model = load_model("shapes32")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
method = PCA(num_samples=n, num_components=k, oversample=p, batch_size=b)
method.find(model, SamplerSettings(num_steps=steps, spacing="trailing"))
result = {
    "n": n,
    "seconds": time.perf_counter() - start,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "after_load_mib": base / 1024,
    "h_dim": int(torch.tensor(model.h_shape).prod()),
}
print(json.dumps(result))
"""


@user_errors_exit  # a bad argument is one line and exit 2, before any child runs
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--oversample", type=int, default=40)
    parser.add_argument("--batch", type=int, default=96)
    args = parser.parse_args()
    integer(args.k, "--k", 1)
    integer(args.oversample, "--oversample", 0)
    for i, n in enumerate(args.n):  # the streaming path tracks k + oversample axes, and every sample spans one
        integer(n, f"--n[{i}]", max(args.k + args.oversample, args.k + 1))
    integer(args.steps, "--steps", 1, 1000)
    integer(args.batch, "--batch", args.k + args.oversample)  # a batch spans the tracked axes
    print(f"{'N':>6} {'seconds':>8} {'peak RSS MiB':>13} {'after load MiB':>15} {'bound MiB':>10}")
    for n in args.n:
        out = run_to_end(
            [sys.executable, "-c", CHILD, str(n), str(args.steps), str(args.k), str(args.oversample), str(args.batch)]
        )
        r = json.loads(out.strip().splitlines()[-1])
        d, t, kp, b = r["h_dim"], args.steps, args.k + args.oversample, args.batch
        bound = (t * (kp + 2) * d * 8 + (b + kp) * t * d * 8 + b * t * d * 4 + 2 * (kp + b + 1) * d * 8) / 2**20
        print(f"{n:>6} {r['seconds']:>8.1f} {r['peak_mib']:>13.0f} {r['after_load_mib']:>15.0f} {bound:>10.1f}")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
