"""python -m tf_impl --dataset D --model M [--steps N | --epochs E] ... (see --help)"""
import sys

from data.cli import run_cli
from data.contract import LOOPS, build_parser, config_from_args


def main(argv) -> int:
    parser = build_parser("python -m tf_impl", "Train the tf.keras MLP/CNN on the shared data stream.",
                          loops=LOOPS["tf"])
    cfg = config_from_args(parser.parse_args(argv))
    if cfg.adam_impl != "keras":
        parser.error("--adam-impl torch exists only in torch_impl (Keras has one Adam)")
    from .train import run
    return run(cfg)


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m tf_impl"))
