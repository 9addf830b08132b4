"""The L-Mul precision study ("Addition is All You Need", docs/lmul.md), measured.

    python -m experiments.lmul_precision --workdir=runs/lmul_precision

1. Products: mean, RMS and max relative error of one product ``x y`` for L-Mul with 2 to 7
   mantissa bits (the paper's offset and the wide 2^-4 one), fp8 e4m3 and e5m2 and bf16
   multiplication (operands and product rounded to the format), on uniform mantissas
   (``x, y = 1 + U[0, 1)``), Gaussian values, and the (input activation, weight) pairs of every
   Dense layer of a trained model. ``products.md``, ``products.json``, ``products.png``.
2. Models: a softmax-attention digits classifier (``attention_digits.py``) trained exactly, then
   evaluated without retraining with its attention products (``q k^T``, ``P v``) in L-Mul, and
   with every matrix product in L-Mul or fp8 e4m3; then fine-tuned from the exact model with every
   product in 3-bit L-Mul versus fp8 e4m3; once per seed of ``--seeds`` (each seed trains its own
   exact model, in ``seed_K/``, and fine-tunes it), the table reporting mean ± std over the seeds
   (``experiments.seeds``). ``models.md``, ``models.json``. The products do not depend on the seed;
   the trained operands are those of the first seed's model.

Training stages resume from their sub-directories when the command is rerun.
"""

import json
import os

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
from absl import app, flags, logging

from experiments.configs import load_config
from experiments.logging_setup import start_main
from experiments.seeds import SEEDS_HELP, mean_spread, parse_seeds
from jaxattn.data import load_task
from jaxattn.ops.lmul import lmul_forward
from jaxattn.train import build_model, evaluate_variables, restore_variables, train_and_evaluate
from jaxattn.train.plots import pyplot, save_figure

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_EPOCHS = flags.DEFINE_integer("epochs", 60, "Epochs of exact training.")
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 5, "Epochs of fine-tuning in each arithmetic.")
_SAMPLES = flags.DEFINE_integer("samples", 200_000, "Products per distribution.")
_EVAL_BITS = flags.DEFINE_list("eval_mantissa_bits", ["2", "3", "4", "5"], "L-Mul widths evaluated without retraining.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], SEEDS_HELP)
_NUM_LAYERS = flags.DEFINE_integer("num_layers", None,
                                   "Attention layers of the model (attention_digits.py's 4 when unset).")
flags.mark_flag_as_required("workdir")

LMUL_BITS = range(2, 8)


def _rounded_product(x: np.ndarray, y: np.ndarray, dtype) -> np.ndarray:
    """Operands rounded to ``dtype`` (saturating), product in float64, rounded to ``dtype`` again."""
    largest = float(ml_dtypes.finfo(dtype).max)
    cast = lambda a: np.clip(a, -largest, largest).astype(dtype).astype(np.float64)  # noqa: E731
    return cast(cast(x) * cast(y))


def product_methods() -> dict:
    """name -> ``f(x, y)`` on fp32 arrays, returning float64 products."""
    methods = {}
    for bits in LMUL_BITS:
        for offset in ("paper", "wide"):
            methods[f"L-Mul {bits}-bit ({offset} offset)"] = (
                lambda x, y, b=bits, o=offset: np.asarray(lmul_forward(x, y, mantissa_bits=b, offset=o), np.float64)
            )
    methods["fp8 e4m3"] = lambda x, y: _rounded_product(x, y, ml_dtypes.float8_e4m3fn)
    methods["fp8 e5m2"] = lambda x, y: _rounded_product(x, y, ml_dtypes.float8_e5m2)
    methods["bf16"] = lambda x, y: _rounded_product(x, y, ml_dtypes.bfloat16)
    return methods


def relative_errors(approximate: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    exact = x.astype(np.float64) * y.astype(np.float64)
    keep = (exact != 0) & np.isfinite(approximate)
    error = np.abs(approximate[keep] - exact[keep]) / np.abs(exact[keep])
    return dict(mean=float(np.mean(error)), rms=float(np.sqrt(np.mean(error**2))), max=float(np.max(error)),
                count=int(keep.sum()))


def dense_operand_pairs(model, variables, inputs, lengths, samples: int, seed: int = 0):
    """Random (input activation, weight) pairs that meet in the model's Dense layers."""
    captured = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            captured.append((args[0], context.module.variables["params"]["kernel"]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, inputs, lengths=lengths, train=False)
    rng = np.random.default_rng(seed)
    xs, ws = [], []
    per_layer = samples // len(captured) + 1
    for activations, kernel in captured:
        activations = np.asarray(nn.unbox(activations), np.float32).reshape(-1, kernel.shape[0])
        kernel = np.asarray(nn.unbox(kernel), np.float32)
        rows = rng.integers(0, activations.shape[0], per_layer)
        inner = rng.integers(0, kernel.shape[0], per_layer)
        cols = rng.integers(0, kernel.shape[1], per_layer)
        xs.append(activations[rows, inner])
        ws.append(kernel[inner, cols])
    return np.concatenate(xs)[:samples], np.concatenate(ws)[:samples]


def product_study(distributions: dict) -> dict:
    results = {}
    for method, product in product_methods().items():
        results[method] = {name: relative_errors(product(x, y), x, y) for name, (x, y) in distributions.items()}
        logging.info("%s: %s", method, {k: round(100 * v["mean"], 3) for k, v in results[method].items()})
    return results


def arithmetic_config(config, kind: str, bits: int = 3, dense: bool = True, attention: bool = True):
    config = config.copy_and_resolve_references()
    config.model.arithmetic.update(kind=kind, mantissa_bits=bits, dense=dense, attention=attention)
    return config


def seed_study(config, workdir: str) -> tuple[dict, dict]:
    """One seed's models: ``({arithmetic: {"loss", "accuracy"}}, the exact model's variables)``."""
    exact = train_and_evaluate(config, os.path.join(workdir, "exact"))
    variables = jax.device_get(restore_variables(config, os.path.join(workdir, "exact")))
    results = {"exact": exact["test"]}
    for bits in map(int, _EVAL_BITS.value):
        results[f"L-Mul {bits}-bit attention products"] = evaluate_variables(
            arithmetic_config(config, "lmul", bits, dense=False), variables)["test"]
    results["L-Mul 3-bit, every product"] = evaluate_variables(arithmetic_config(config, "lmul", 3), variables)["test"]
    results["fp8 e4m3, every product"] = evaluate_variables(arithmetic_config(config, "fp8_e4m3"), variables)["test"]
    for name, kind in (("L-Mul 3-bit", "lmul"), ("fp8 e4m3", "fp8_e4m3")):
        finetune = arithmetic_config(config, kind, 3)
        finetune.train.num_epochs = _FINETUNE_EPOCHS.value
        finetune.optimizer.lr = config.optimizer.lr / 10
        finetune.optimizer.warmup_epochs = 0.0
        summary = train_and_evaluate(finetune, os.path.join(workdir, f"finetune_{kind}"), initial_variables=variables)
        results[f"{name}, every product, fine-tuned {_FINETUNE_EPOCHS.value} epochs"] = summary["test"]
    return results, variables


def model_study(workdir: str, seeds: list[int]) -> tuple[dict, tuple]:
    """``({arithmetic: {"seeds", "accuracy": [per seed], "loss": [per seed]}}, (activations, weights))``."""
    config = load_config("attention_digits", f"softmax_attention,num_epochs={_EPOCHS.value}")
    if _NUM_LAYERS.value is not None:
        config.model.num_layers = _NUM_LAYERS.value
    per_seed, first_variables = [], None
    for seed in seeds:
        logging.info("Models, seed %d", seed)
        seed_config = config.copy_and_resolve_references()
        seed_config.seed = seed
        results, variables = seed_study(seed_config, os.path.join(workdir, f"seed_{seed}"))
        per_seed.append(results)
        if first_variables is None:
            first_variables = variables
    models = {name: {"seeds": seeds, **{key: [results[name][key] for results in per_seed]
                                        for key in ("accuracy", "loss")}}
              for name in per_seed[0]}
    task = load_task(config.task.name, **config.task.options)
    test = task.splits["test"]
    pairs = dense_operand_pairs(build_model(config.model, task), first_variables, test["inputs"][:64],
                                test["lengths"][:64], _SAMPLES.value)
    return models, pairs


def write_products(results: dict, workdir: str) -> None:
    distributions = list(next(iter(results.values())))
    lines = ["Relative error of one product, in % (mean / RMS / max).", "",
             "| method | " + " | ".join(distributions) + " |", "|---|" + "---:|" * len(distributions)]
    for method, by_distribution in results.items():
        cells = [f"{100 * e['mean']:.3f} / {100 * e['rms']:.3f} / {100 * e['max']:.2f}"
                 for e in by_distribution.values()]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    with open(os.path.join(workdir, "products.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, "products.json"), "w") as f:
        json.dump(results, f, indent=2)

    figure, axis = pyplot().subplots(figsize=(8, 4.5), constrained_layout=True)
    for offset, marker in (("paper", "o-"), ("wide", "s--")):
        for name in distributions:
            errors = [100 * results[f"L-Mul {b}-bit ({offset} offset)"][name]["mean"] for b in LMUL_BITS]
            axis.plot(list(LMUL_BITS), errors, marker, label=f"L-Mul, {offset} offset, {name}")
    for method, style in (("fp8 e4m3", ":"), ("fp8 e5m2", "-."), ("bf16", "-")):
        axis.axhline(100 * results[method][distributions[0]]["mean"], linestyle=style, color="gray",
                     label=f"{method} ({distributions[0]})")
    axis.set_yscale("log")
    axis.set_xlabel("L-Mul mantissa bits m")
    axis.set_ylabel("mean relative error of a product (%)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=6, ncol=2)
    save_figure(figure, os.path.join(workdir, "products.png"), dpi=120)


def write_models(results: dict, workdir: str) -> None:
    """The table of test accuracies; with several seeds, mean ± std over them of the accuracy and of
    each seed's change from its own exact model."""
    exact = np.asarray(results["exact"]["accuracy"])
    lines = [f"Seeds {results['exact']['seeds']}; mean ± std over seeds (population std) where there are several.", "",
             "| arithmetic | test accuracy | change from exact |", "|---|---:|---:|"]
    for name, metrics in results.items():
        change = 100 * (np.asarray(metrics["accuracy"]) - exact)
        lines.append(f"| {name} | {mean_spread(metrics['accuracy'], digits=4)} | {mean_spread(change, digits=2)} pt |")
    with open(os.path.join(workdir, "models.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, "models.json"), "w") as f:
        json.dump(results, f, indent=2)


def main(argv):
    start_main(argv)
    workdir = _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    models, (activations, weights) = model_study(workdir, parse_seeds(_SEEDS.value))
    write_models(models, workdir)
    rng = np.random.default_rng(0)
    samples = _SAMPLES.value
    distributions = {
        "uniform mantissas": tuple((1 + rng.uniform(0, 1, samples)).astype(np.float32) for _ in range(2)),
        "gaussian": tuple(rng.standard_normal(samples).astype(np.float32) for _ in range(2)),
        "trained weights x activations": (activations, weights),
    }
    write_products(product_study(distributions), workdir)
    for name in ("products.md", "models.md"):
        with open(os.path.join(workdir, name)) as f:
            print(f.read())


if __name__ == "__main__":
    app.run(main)
