"""Seconds per pool-adaptation step with the network in the usual layout and channels-last.

One optimiser step of `fiftyone_elfs.embeddings.pool_adaptation` (two SimCLR views of 128
images at 128 px through Lite0, the last stages trained), timed for both memory layouts in
turn, `--repeats` times each on random images; the first of each is a warm-up. Prints each
step and the medians. The package trains channels-last since 2026-12-07.

    .venv/bin/python benchmarks/scale/adaptation_layout.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_elfs.difficulty.contrastive import nt_xent, simclr_views
from fiftyone_elfs.embeddings import efficientnet_lite, pool_adaptation


def _trainer(channels_last: bool):
    net = efficientnet_lite.load_efficientnet_lite0()
    for name, p in net.named_parameters():
        p.requires_grad_(pool_adaptation._is_trained(name))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    head = nn.Sequential(nn.Linear(net.num_features, 512), nn.ReLU(), nn.Linear(512, 128))
    trained = [p for p in net.parameters() if p.requires_grad] + list(head.parameters())
    return net, head, torch.optim.Adam(trained, lr=1e-4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    trainers = {layout: _trainer(layout) for layout in (False, True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for layout, (net, head, optimizer) in trainers.items():
            start = time.perf_counter()
            views = torch.cat([simclr_views(images, generator, 0.2) for _ in range(2)])
            views = (views - 0.5) / 0.5
            if layout:
                views = views.contiguous(memory_format=torch.channels_last)
            z = F.normalize(head(pool_adaptation._pooled_features(net, views)), dim=1)
            loss = nt_xent(z[: args.batch], z[args.batch :], 0.2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds[layout].append(time.perf_counter() - start)
            name = "channels-last" if layout else "usual layout"
            print(f"step {repeat}: {name} {seconds[layout][-1]:.2f} s", flush=True)
    usual, last = (statistics.median(seconds[k][1:]) for k in (False, True))
    print(f"median after the warm-up: usual {usual:.2f} s, channels-last {last:.2f} s "
          f"({usual / last:.2f}x), {args.threads} thread(s)")  # fmt: skip


if __name__ == "__main__":
    main()
