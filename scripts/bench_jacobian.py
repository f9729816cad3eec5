"""Jacobian directions: block subspace iteration vs sequential power iteration at equal accuracy.

On the shipped Shapes model (or --weights), at the grid step nearest --tau of sample --seed's own
trajectory, finds the top k right singular vectors of J = d eps / d h for each k with both solvers,
each run until every vector's relative eigen-residual is below --tol. Reports wall seconds, the number
of single-vector Jacobian products (JVPs + VJPs, each about one decoder pass), iterations, and the
accuracy against a tightly converged reference (largest relative singular-value error, smallest |cos|
between vectors).

    python scripts/bench_jacobian.py --k 1 3 8
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from hspace.checks import integer, number
from hspace.cli import user_errors_exit


@user_errors_exit  # a bad argument or --weights is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 8])
    parser.add_argument("--tau", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--oversample", type=int, default=2)
    args = parser.parse_args()
    for i, k in enumerate(args.k):
        integer(k, f"--k[{i}]", 1)
    integer(args.tau, "--tau", 0, 999)
    integer(args.seed, "--seed", 0)
    integer(args.steps, "--steps", 1, 1000)
    number(args.tol, "--tol", above=0.0)
    integer(args.oversample, "--oversample", 0)
    # Imported once the arguments are checked: diffusers takes seconds to import.
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import make_schedule
    from hspace.directions.jacobian_map import jacobian_products
    from hspace.directions.subspace import block_subspace_iteration, sequential_power_iteration

    model = load_model(args.weights)
    for i, k in enumerate(args.k):  # before sampling: at most as many directions as h has dimensions
        integer(k, f"--k[{i}]", 1, math.prod(model.h_shape))
    schedule = make_schedule(model.alphas_cumprod, args.steps, "trailing")
    x_T, _ = noise_for([args.seed], model, schedule)
    trajectory = sample(model, schedule, x_T, record_x=True)
    idx = schedule.index_of(args.tau)
    tau = int(schedule.timesteps[idx])
    products = jacobian_products(model, trajectory.x_t[0, idx], tau)
    print(f"{args.weights}: J at tau {tau} is {products.m} x {products.n}; torch threads {torch.get_num_threads()}")
    reference = block_subspace_iteration(
        products.jvp, products.vjp, products.n, max(args.k), oversample=8, tol=1e-6, max_iters=3000
    )
    print(
        f"reference (block, tol 1e-6): sigma = {[round(float(s), 4) for s in reference.values]}, converged "
        f"{reference.converged}"
    )
    print(
        "| k | solver | seconds | JVPs | VJPs | products | iterations | converged | max sigma rel. error | min abs "
        "cos |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.k:
        for solver in ("block", "sequential"):
            start = time.perf_counter()
            if solver == "block":
                result = block_subspace_iteration(
                    products.jvp, products.vjp, products.n, k, args.oversample, args.tol, max_iters=2000
                )
            else:
                result = sequential_power_iteration(products.jvp, products.vjp, products.m, k, args.tol, max_iters=5000)
            seconds = time.perf_counter() - start
            error = float(((result.values - reference.values[:k]).abs() / reference.values[:k]).max())
            cos = float((result.right * reference.right[:k]).sum(dim=1).abs().min())
            total = result.jvp_count + result.vjp_count
            print(
                f"| {k} | {solver} | {seconds:.2f} | {result.jvp_count} | {result.vjp_count} | {total} | "
                f"{result.iterations} | {result.converged} | {error:.1e} | {cos:.4f} |"
            )


if __name__ == "__main__":
    main()
