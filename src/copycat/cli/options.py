"""Every command-line option, declared once. Defaults come from the config dataclasses and
scheme lists from the registries, so help texts and errors never drift from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from copycat.config import (
    HttpOracleConfig,
    PoolConfig,
    ServeConfig,
    StealConfig,
    TargetConfig,
    TrainConfig,
)
from copycat.data.registry import DATASETS
from copycat.defences.registry import DEFENCES
from copycat.oracles.registry import ORACLES
from copycat.pools.registry import POOLS
from copycat.steal.registry import HELP as SELECTION_HELP
from copycat.train.registry import MODELS

# One instance of each config: the single source of every default below.
POOL = PoolConfig()
STEAL = StealConfig()
TRAIN = TrainConfig()
TARGET = TargetConfig()
HTTP = HttpOracleConfig()
SERVE = ServeConfig()

# -- shared by the stage commands ----------------------------------------------------------
RunDirOpt = Annotated[
    Path, typer.Option("--run-dir", help="Run directory (answers, checkpoints, eval, report).")
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
OracleOpt = Annotated[str, typer.Option(help=f"The target: {ORACLES.usages()}.")]
ArchOpt = Annotated[
    str,
    typer.Option(
        help=f"Architecture: {MODELS.usages()}, or auto (the copycat default: cnn-wide for "
        "colour images; for grey ones cnn-small or cnn-wide, whichever agrees more with the "
        "held-out answers), or auto:A,B,... to choose so among the architectures named "
        "(e.g. auto:cnn-small,cnn-wide,resnet18, which also copies ResNet targets; slow on "
        "a CPU)."
    ),
]
EpochsOpt = Annotated[
    int, typer.Option(help="Training epochs (copycats, unset: 10, more for small stores).")
]
MinStepsOpt = Annotated[
    int, typer.Option(help="Unset epochs train at least this many optimiser steps.")
]
EnsembleOpt = Annotated[
    int,
    typer.Option(
        help="Train this many copies alike on the answers (seeds seed + 1000 i) and keep the "
        "mean of their probabilities as the copycat; stores over --ensemble-answers answers "
        "train one. 1: off."
    ),
]
EnsembleAnswersOpt = Annotated[
    int, typer.Option(help="Largest store (answers) that --ensemble trains several copies on.")
]

# -- steal -----------------------------------------------------------------------------------
PoolOpt = Annotated[
    str, typer.Option(help=f"Query images: {POOLS.usages()}, or a '+'-joined mix of them.")
]
BudgetOpt = Annotated[int, typer.Option(help="Answered images to pay for, in all runs.")]
OutputOpt = Annotated[
    str, typer.Option(help="What the oracle reveals: label, probs, topk:K, rounded:D.")
]
MixOpt = Annotated[str, typer.Option(help="Weights of the pool parts, e.g. 0.7,0.3.")]
QueryBatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per query batch.")]
PoolSeedOpt = Annotated[int, typer.Option("--seed", help="Pool seed (same seed = resumable).")]
AugmentOpt = Annotated[bool, typer.Option(help="Query-time augmentation.")]
InvertOpt = Annotated[
    float | None,
    typer.Option(
        help=f"Probability of inverting an image (default: {POOL.augment.invert}).",
        show_default=False,
    ),
]
SelectionOpt = Annotated[str, typer.Option(help=f"Which images to query: {SELECTION_HELP}.")]

# -- train -----------------------------------------------------------------------------------
TrainBatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate.")]
LabelsOpt = Annotated[str, typer.Option(help="auto, hard or soft.")]
BalanceOpt = Annotated[bool, typer.Option(help="Class-balanced sampling.")]
TrainAugmentOpt = Annotated[bool, typer.Option(help="Shift and flip the answers while training.")]
TemperatureOpt = Annotated[
    float, typer.Option(help="Temperature of the soft-label (distillation) loss.")
]
ValFractionOpt = Annotated[
    float,
    typer.Option(
        help="Share of the answers held out to pick the epoch of best agreement; 0: train on "
        "every answer and keep the last epoch."
    ),
]
MixupOpt = Annotated[
    float,
    typer.Option(
        help="Mixup at training time: Beta's alpha for the weight with which pairs of "
        "images (and their losses) are mixed; 0: off."
    ),
]
EmaOpt = Annotated[
    float,
    typer.Option(
        help="Keep a moving average of the weights over the training steps, with this decay "
        "per step (e.g. 0.999), as the copycat; 0: the weights as trained."
    ),
]
SemiOpt = Annotated[
    str,
    typer.Option(
        help="none, or fixmatch: also train on unqueried pool images with confident "
        "pseudo-labels, consistent under strong augmentation."
    ),
]
UnlabelledOpt = Annotated[
    int, typer.Option(help="Unqueried pool images used by --semi (free: never sent).")
]

# -- evaluate / run / target -----------------------------------------------------------------
TestSetOpt = Annotated[
    str,
    typer.Option(
        help=f"Labelled set: {DATASETS.usages()} (SPLIT: train, val or test), or "
        "folder:PATH (ImageFolder layout)."
    ),
]
EvalOracleOpt = Annotated[
    str | None,
    typer.Option(
        "--oracle",
        help=f"The target: {ORACLES.usages()}. Default: the one the run's steal recorded.",
    ),
]
AllowOtherOracleOpt = Annotated[
    bool,
    typer.Option(
        help="Score against another oracle than the run's (or one whose fingerprint changed)."
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        help="Show what would be sent (count, shape, sources) and what it would cost; "
        "send nothing billable and write nothing."
    ),
]
ConfigFileOpt = Annotated[Path, typer.Option("--config", help="Experiment TOML (see configs/).")]
DatasetOpt = Annotated[
    str,
    typer.Option(
        help=f"Labelled set: {', '.join(DATASETS.names())}, or folder:PATH (ImageFolder tree)."
    ),
]
TargetOutOpt = Annotated[
    Path, typer.Option("--out", help="Folder for model.safetensors, card.json, model.onnx.")
]

# -- HTTP oracles ------------------------------------------------------------------------------
# The names of the options below (as commands receive them), each a field of HttpOracleConfig.
HTTP_OPTIONS = (
    "api_key_env",
    "concurrency",
    "max_qps",
    "timeout",
    "max_retries",
    "price_per_1000",
    "request_batch",
    "response_format",
    "label_map",
    "input_shape",
    "num_classes",
    "send_as",
)
_H = "HTTP oracles"
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(help="Environment variable holding the API key.", rich_help_panel=_H),
]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight.", rich_help_panel=_H)]
MaxQpsOpt = Annotated[
    float | None, typer.Option(help="Client-side pace, requests/s.", rich_help_panel=_H)
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per request.", rich_help_panel=_H)]
RetriesOpt = Annotated[int, typer.Option(help="Retries per request.", rich_help_panel=_H)]
PriceOpt = Annotated[
    float, typer.Option(help="Price per 1000 images, for the cost ledger.", rich_help_panel=_H)
]
RequestBatchOpt = Annotated[int, typer.Option(help="Images per request.", rich_help_panel=_H)]
ResponseFormatOpt = Annotated[
    str,
    typer.Option(help="Plain JSON replies: label-score, label or probs.", rich_help_panel=_H),
]
LabelMapOpt = Annotated[
    str | None,
    typer.Option(
        help="Plain JSON: class names in index order (JSON list, a,b,c or a file).",
        rich_help_panel=_H,
    ),
]
InputShapeOpt = Annotated[
    str | None, typer.Option(help="Plain JSON: input shape C,H,W.", rich_help_panel=_H)
]
NumClassesOpt = Annotated[
    int | None, typer.Option(help="Class count, if the target hides it.", rich_help_panel=_H)
]
SendAsOpt = Annotated[
    str,
    typer.Option(
        help="OIP input encoding: auto (the model's datatype; binary tensors if the server "
        "lists binary_tensor_data), binary, json, or the datatype as JSON: uint8, fp32, png.",
        rich_help_panel=_H,
    ),
]

# -- serve -----------------------------------------------------------------------------------
ModelDirOpt = Annotated[
    Path, typer.Option("--model", help="Target folder (model.safetensors + card.json).")
]
HostOpt = Annotated[str, typer.Option(help="Interface to bind; loopback by default.")]
PortOpt = Annotated[int, typer.Option(help="TCP port (0 picks a free one).")]
ServeOutputOpt = Annotated[
    str, typer.Option("--output", help="What answers reveal: label, topk:K, probs, rounded:D.")
]
ServeKeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key-env", help="Environment variable holding the API key; no key, no auth."
    ),
]
RateLimitOpt = Annotated[float | None, typer.Option(help="Requests/s per client (429 beyond).")]
MaxBatchOpt = Annotated[int, typer.Option(help="Images per request (413 beyond).")]
MaxBodyOpt = Annotated[float, typer.Option(help="Request body limit in MiB.")]
ModelNameOpt = Annotated[
    str | None, typer.Option("--name", help="Model name in URLs (default: folder).")
]
QueryLogOpt = Annotated[str, typer.Option(help="JSON-lines query log ('' turns it off).")]
RateLimitImagesOpt = Annotated[
    float | None, typer.Option(help="Images/s per client (429 beyond); a full batch may burst.")
]
MaxClientsOpt = Annotated[
    int, typer.Option(help="Clients the rate limiter remembers; the least recent is forgotten.")
]
TrustedProxyHeaderOpt = Annotated[
    str | None,
    typer.Option(
        help="Take the client address from this header set by a trusted proxy "
        "(e.g. X-Forwarded-For; its last entry). Unset: the peer address."
    ),
]
MaxRequestMpOpt = Annotated[
    float, typer.Option(help="Megapixels decoded per request, all images together (413 beyond).")
]

# -- steal: accounting -------------------------------------------------------------------------
MaxBilledOpt = Annotated[
    int | None,
    typer.Option(
        help="Hard cap on images that may be billed, retries and earlier runs included "
        "(checked before each request is sent)."
    ),
]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        help="Hard cap on the cost, in the currency of --price-per-1000 (sets --max-billed)."
    ),
]

# -- defences (steal / evaluate on local targets, serve) --------------------------------------
DefenceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--defence",
        help=f"A defence in front of the target (repeatable, innermost first): "
        f"{DEFENCES.usages()}. Local torch:/onnx: targets and serve only.",
    ),
]

# -- target suite and budget curve -------------------------------------------------------------
TargetShapeOpt = Annotated[
    str | None,
    typer.Option("--input-shape", help="folder: sets only: C,H,W to resize to (default 3,32,32)."),
]
SuiteOutOpt = Annotated[Path, typer.Option("--out", help="Folder of the suite's targets.")]
SuiteOnlyOpt = Annotated[
    str,
    typer.Option("--only", help="Comma-separated suite targets (default: fmnist, digits, emoji)."),
]
SuiteReuseOpt = Annotated[
    str,
    typer.Option(
        "--reuse",
        help="Comma-separated NAME=PATH: a published target copied in place of training suite "
        "target NAME, where its card says it is the suite's recipe (e.g. fmnist=targets/fmnist).",
    ),
]
QuickOpt = Annotated[bool, typer.Option(help="Few epochs: quick, weaker targets.")]
BudgetsOpt = Annotated[
    str, typer.Option(help="Answer counts to train copycats on, e.g. 1k,2k,5k,10k,20k.")
]
CurveOracleOpt = Annotated[
    str | None, typer.Option("--oracle", help="The target (default: the run's steal oracle).")
]
CurveTestSetOpt = Annotated[
    str | None,
    typer.Option("--test-set", help="Labelled set to score on (default: the run's evaluate one)."),
]
