#!/usr/bin/python3
"""Golden meta-gradient cases computed by PyTorch autograd in float64, in the format of
../shared/golden (see ../shared/README.md), for shapes and settings the shipped cases do not cover.

  golden_gen.py --out DIR --count N --seed S   writes N random cases to DIR
  golden_gen.py --verify DIR                   recomputes the expect of every case in DIR from its
                                               inputs and compares (checks this script against
                                               the shipped cases)

The maths is written from the format's definition, independently of the C++ engine: an MLP
y = x.W + b with ReLU between layers, fields pooled (sum or mean) from a shared embedding table,
an inner loop of plain SGD (per-parameter rates for Meta-SGD) on the support loss adapting the
MLP only, and the query loss at the adapted weights. Needs Debian's python3-torch.
"""
import argparse
import json
import os
import random
import sys

import torch

torch.set_default_dtype(torch.float64)


def pool(emb, bag, pooling):
    v = torch.stack([emb[i] for i in bag]).sum(0)
    return v / len(bag) if pooling == "mean" else v


def inputs(emb, rows, pooling):
    return torch.stack([torch.cat([pool(emb, bag, pooling) for bag in row]) for row in rows])


def forward(weights, x):
    h = x
    n = len(weights) // 2
    for i in range(n):
        h = h @ weights[2 * i] + weights[2 * i + 1]
        if i < n - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def loss_fn(kind, yhat, y):
    if kind == "mse":
        return ((yhat - y) ** 2).mean()
    return torch.nn.functional.binary_cross_entropy_with_logits(yhat, y)


def expect(case):
    """The expect object of a case, computed from its inputs."""
    algo, kind, pooling = case["algo"], case["loss"], case["pooling"]
    layers = case["layers"]
    shapes = []
    for i in range(len(layers) - 1):
        shapes += [(layers[i], layers[i + 1]), (layers[i + 1],)]
    w0 = [torch.tensor(w).reshape(s).requires_grad_() for w, s in zip(case["weights"], shapes)]
    ids = sorted(case["emb"], key=int)
    emb = {int(k): torch.tensor(case["emb"][k]).requires_grad_() for k in ids}
    alpha = None
    if algo == "metasgd":
        alpha = [torch.tensor(a).reshape(s).requires_grad_() for a, s in zip(case["alpha"], shapes)]
    second = algo in ("maml", "metasgd")

    xs = inputs(emb, case["support"]["ids"], pooling)
    ys = torch.tensor(case["support"]["y"])
    xq_rows, yq = case["query"]["ids"], torch.tensor(case["query"]["y"])

    w = list(w0)
    for _ in range(case["inner_steps"]):
        g = torch.autograd.grad(loss_fn(kind, forward(w, xs), ys), w, create_graph=second)
        if alpha is not None:
            w = [wi - ai * gi for wi, ai, gi in zip(w, alpha, g)]
        else:
            w = [wi - case["inner_lr"] * gi for wi, gi in zip(w, g)]
    if not second:
        # First order: the adapted weights are a leaf; embeddings reach the loss only directly.
        w = [wi.detach().requires_grad_() for wi in w]
    xq = inputs(emb, xq_rows, pooling)
    lq = loss_fn(kind, forward(w, xq), yq)

    out = {"adapted_weights": [wi.detach().flatten().tolist() for wi in w], "query_loss": lq.item()}
    emb_list = [emb[int(k)] for k in ids]
    if algo == "reptile":
        g_emb = torch.autograd.grad(lq, emb_list, allow_unused=True)
        out["update"] = [(a - b).detach().flatten().tolist() for a, b in zip(w0, w)]
    else:
        wrt = (w0 if second else w) + (alpha or [])
        grads = torch.autograd.grad(lq, wrt + emb_list, allow_unused=True)
        # A tensor with no path to the loss (alpha without inner steps) has a zero gradient.
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt + emb_list, grads)]
        n = len(w0)
        out["grad_weights"] = [g.flatten().tolist() for g in grads[:n]]
        if alpha is not None:
            out["grad_alpha"] = [g.flatten().tolist() for g in grads[n : n + len(alpha)]]
        g_emb = grads[len(wrt) :]
    dim = case["dim"]
    out["grad_emb"] = {
        k: (g.tolist() if g is not None else [0.0] * dim) for k, g in zip(ids, g_emb)
    }
    return out


def random_case(rng, index):
    algo = rng.choice(["fomaml", "maml", "reptile", "metasgd"])
    kind = rng.choice(["mse", "bce"])
    pooling = rng.choice(["sum", "mean"])
    fields = rng.randint(1, 6)
    dim = rng.randint(1, 8)
    wide = rng.random() < 0.15  # now and then MeLU-like widths
    hidden = [rng.randint(32, 96) if wide else rng.randint(1, 24) for _ in range(rng.randint(0, 3))]
    layers = [fields * dim] + hidden + [1]
    # Ids are 64-bit feature keys: small ones, and now and then large ones.
    pool_ids = [rng.randrange(1 << 64) if rng.random() < 0.2 else rng.randrange(64) for _ in range(rng.randint(2, 30))]
    max_bag = rng.choice([1, 1, 2, 4])

    def rows(n):
        return [
            [[rng.choice(pool_ids) for _ in range(rng.randint(1, max_bag))] for _ in range(fields)]
            for _ in range(n)
        ]

    def labels(n):
        if kind == "bce":
            return [float(rng.randint(0, 1)) for _ in range(n)]
        return [float(rng.randint(1, 5)) for _ in range(n)]

    # Mostly a few rows, as cold-start users have; now and then many (more than the first layer is wide).
    many = rng.random() < 0.25
    ns, nq = rng.randint(1, 40 if many else 9), rng.randint(1, 25 if many else 7)
    support, query = rows(ns), rows(nq)
    used = {i for r in support + query for bag in r for i in bag}
    # An id in the table that no row uses: its gradient is zero.
    if rng.random() < 0.3:
        used.add(max(pool_ids) + 1)
    used = sorted(used)
    weights = []
    for i in range(len(layers) - 1):
        scale = (2.0 / layers[i]) ** 0.5
        weights.append([rng.gauss(0, scale) for _ in range(layers[i] * layers[i + 1])])
        weights.append([rng.gauss(0, 0.1) for _ in range(layers[i + 1])])
    case = {
        "name": f"random_{index:03d}_{algo}_{kind}_{pooling}",
        "algo": algo,
        "loss": kind,
        "layers": layers,
        "fields": fields,
        "dim": dim,
        "pooling": pooling,
        "inner_steps": rng.randint(0, 6),
        "inner_lr": rng.choice([0.01, 0.05, 0.1, 0.3]),
        "weights": weights,
        "emb": {str(i): [rng.gauss(0, 0.5) for _ in range(dim)] for i in used},
        "support": {"ids": support, "y": labels(ns)},
        "query": {"ids": query, "y": labels(nq)},
    }
    if algo == "metasgd":
        case["alpha"] = [[rng.uniform(0.005, 0.1) for _ in w] for w in weights]
    case["expect"] = expect(case)
    return case


def finite(value):
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return abs(value) < 1e6  # False for inf and nan too


def float32_error(case):
    """The largest relative error, over the expected tensors, of the same maths done in float32."""
    torch.set_default_dtype(torch.float32)
    try:
        got = expect(case)
    finally:
        torch.set_default_dtype(torch.float64)
    return max(tensor_errors(case["expect"], got).values())


def stable_case(rng, index):
    """A random case that float32 can reproduce: one whose inner loop diverges, or that is so badly
    conditioned that PyTorch itself in float32 is off by more than 1e-4 (a tenth of the bar the
    engine is held to), is drawn again."""
    while True:
        case = random_case(rng, index)
        if finite(case["expect"]) and float32_error(case) <= 1e-4:
            return case


def rel_error(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return ((a - b).norm() / max(b.norm().item(), 1e-12)).item()


def tensor_errors(want, got):
    """Relative error |got - want| / |want| of each expected tensor; grad_emb is one tensor."""
    errors = {}
    for key in want:
        if key == "grad_emb":
            ids = sorted(want[key])
            errors[key] = rel_error(sum((got[key][k] for k in ids), []), sum((want[key][k] for k in ids), []))
        elif key == "query_loss":
            errors[key] = abs(want[key] - got[key]) / max(abs(want[key]), 1e-12)
        else:
            errors[key] = max((rel_error(g, w) for g, w in zip(got[key], want[key])), default=0.0)
    return errors


def verify(directory):
    worst = 0.0
    files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    if not files:
        sys.exit(f"no cases in {directory}")
    for f in files:
        case = json.load(open(os.path.join(directory, f)))
        want, got = case["expect"], expect(case)
        if sorted(want) != sorted(got):
            sys.exit(f"{f}: keys {sorted(got)}, the case has {sorted(want)}")
        for key, err in tensor_errors(want, got).items():
            worst = max(worst, err)
            if err > 1e-9:
                sys.exit(f"{f}: {key} differs from the case by {err:.3g}")
        print(f"  {f}: every expected tensor recomputed (worst relative error so far {worst:.3g})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verify")
    a = p.parse_args()
    if a.verify:
        verify(a.verify)
        return
    if not a.out:
        p.error("--out or --verify is required")
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    for i in range(a.count):
        case = stable_case(rng, i)
        with open(os.path.join(a.out, case["name"] + ".json"), "w") as f:
            json.dump(case, f)
    print(f"wrote {a.count} cases (seed {a.seed}) to {a.out}")


if __name__ == "__main__":
    main()
