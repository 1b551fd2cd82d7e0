"""Seconds per training epoch of the papers' image networks on one device (ResNet-18: the collapse
and canonical chapters and rank; VGG-16 and the MLP: rank; CONV-L-H: sparse bounds): what a chapter's ``full``
profile costs per epoch, so that its whole run can be estimated before booking a GPU.

    python benchmarks/epochs.py --device cuda [--images 50000] [--batch 128] [--repeats 2]

Data: random images of the real shape (CIFAR's 3x32x32, MNIST's 1x28x28), so no download is needed;
an epoch's cost does not depend on the pixel values. Each network is timed in float32 and under bf16
autocast (CUDA only), one warm-up epoch first, CUDA synchronised; the ratio fp32 / bf16 is printed
side by side.
"""
from __future__ import annotations

import argparse

import torch

from theorylab import bounds, data, models, training


def seconds_per_epoch(build, shape, *, images: int, batch: int, device: torch.device,
                      autocast: torch.dtype | None, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, *shape, generator=generator).to(device)
    y = torch.randint(0, 10, (images,), generator=generator).to(device)
    split = data.Split(x, y, x[:batch], y[:batch])
    model = build().to(device)
    training.train_epochs(model, split, batch=batch, lr=0.01, wd=5e-4, epochs=1, augment=True,
                          autocast=autocast)
    times = []
    for _ in range(repeats):
        result = training.train_epochs(model, split, batch=batch, lr=0.01, wd=5e-4, epochs=1,
                                       augment=True, autocast=autocast)
        times.append(result.seconds)  # train_epochs synchronises CUDA before it stops the clock
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--width", type=int, default=64, help="first-stage channels (64: the papers')")
    args = parser.parse_args()
    device = torch.device(args.device)
    networks = {
        "ResNet-18 (CIFAR)": (lambda: models.resnet18(10, 3, args.width), (3, 32, 32)),
        "VGG-16 (CIFAR)": (lambda: models.vgg16(10, 3, args.width), (3, 32, 32)),
        "MLP-BN-WN 10x100 (CIFAR)": (lambda: models.mlp_bn_wn(3072, 10, 100, 10), (3, 32, 32)),
        "CONV-8-128 (CIFAR)": (lambda: bounds.conv_lh(8, 2 * args.width, 32, 3, 10), (3, 32, 32)),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}); {args.images} images per epoch, batch {args.batch}, "
          f"width {args.width}, best of {args.repeats}")
    for label, (build, shape) in networks.items():
        fp32 = seconds_per_epoch(build, shape, images=args.images, batch=args.batch, device=device,
                                 autocast=None, repeats=args.repeats)
        line = f"{label:26s} fp32 {fp32:8.2f} s/epoch"
        if device.type == "cuda":
            bf16 = seconds_per_epoch(build, shape, images=args.images, batch=args.batch, device=device,
                                     autocast=torch.bfloat16, repeats=args.repeats)
            line += f"   bf16 {bf16:8.2f} s/epoch   fp32/bf16 {fp32 / bf16:5.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
