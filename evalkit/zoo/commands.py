"""`evalkit zoo train mnist`: argparse wiring only (cheap to import; training code loads lazily)."""

from __future__ import annotations

import argparse

DEFAULTS = {
    "out": "zoo-weights",
    "model": "all",
    "device": "cpu",
    "steps": 8000,
    "net_steps": 1500,
    "batch_size": None,  # per model: UNET_BATCH_SIZE / NET_BATCH_SIZE in evalkit.zoo.train
    "seed": 0,
}


def add_train_mnist_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `evalkit zoo train mnist` and `python -m evalkit.zoo.train`."""
    d = DEFAULTS
    p.add_argument(
        "--out", default=d["out"], help="output directory for weights + model_card.json (default: %(default)s)"
    )
    p.add_argument(
        "--model",
        choices=["all", "unet", "flow", "net"],
        default=d["model"],
        help="which model(s) to train; the card in --out keeps entries of the others (default: %(default)s)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=d["device"], help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=d["steps"], help="UNet training steps (default: %(default)s)")
    p.add_argument(
        "--net-steps", type=int, default=d["net_steps"], help="mnist-net training steps (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d["batch_size"],
        help="training batch size (default: 64 for the UNet, 128 for mnist-net)",
    )
    p.add_argument("--seed", type=int, default=d["seed"], help="data split + init + noise seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--init",
        choices=["mnist-unet"],
        default=None,
        help="warm-start the diffusion UNet from a shipped zoo model's weights (default: random init)",
    )


def run_train_mnist(args: argparse.Namespace) -> int:
    from evalkit.zoo.train import train_mnist

    train_mnist(
        args.out,
        models=("unet", "flow", "net") if args.model == "all" else (args.model,),
        device=args.device,
        steps=args.steps,
        net_steps=args.net_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
        init_from=args.init,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `zoo train mnist` to an argparse subparsers object; the leaf sets ``func=run_train_mnist``."""
    zoo = subparsers.add_parser("zoo", help="built-in zoo models (train / reproduce)")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    train = zoo_sub.add_parser("train", help="train a zoo model")
    train_sub = train.add_subparsers(dest="zoo_dataset", required=True)
    mnist = train_sub.add_parser(
        "mnist", help="train mnist-unet (diffusion), mnist-flow (rectified flow) and mnist-net (classifier)"
    )
    add_train_mnist_arguments(mnist)
    mnist.set_defaults(func=run_train_mnist)
    flow = train_sub.add_parser("mnist-flow", help="train mnist-flow (= `zoo train mnist --model flow`)")
    add_train_mnist_arguments(flow)
    flow.set_defaults(func=run_train_mnist, model="flow")
