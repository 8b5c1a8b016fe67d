"""Print the training results as Markdown tables, from the metadata.json of exported models.

    python scripts/results_table.py --seeds runs/full-models --family runs/family-models

The seed table puts each figure next to its reference; the family table lists every
design-space variant found. Figures come from the files, so docs/results.md is not hand-typed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelrepo.layout import ModelRepository
from modelrepo.metadata import ModelMetadata
from training import catalog

REFERENCE = {  # accuracy, loss, parameters (issue 2)
    "original": (0.991, 0.0352, 1_199_882),
    "depthwise": (0.9921, 0.0252, 823_828),
}


def latest(root: Path) -> dict[str, ModelMetadata]:
    """Each variant's latest metadata in a model repository."""
    repository = ModelRepository(root)
    return {name: repository.get(name).load_metadata() for name in repository.variants()}


def per_epoch(meta: ModelMetadata) -> str:
    """Median seconds per epoch (robust to one disturbed epoch)."""
    return f"{meta.median_epoch_seconds():.1f}"


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=Path, required=True, help="repository of the 12-epoch run")
    parser.add_argument("--family", type=Path, required=True, help="repository of the family run")
    args = parser.parse_args()

    seeds = latest(args.seeds)
    print(
        "| variant | test accuracy (ref.) | test loss (ref.) | parameters (ref.) | MACs/image "
        "| s/epoch (median) | total s | SavedModel |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in catalog.SEED_VARIANTS:
        m, (acc, loss, params) = seeds[name], REFERENCE[name]
        print(
            f"| {name} | {m.test_accuracy:.2%} ({acc:.2%}) | {m.test_loss:.4f} ({loss}) "
            f"| {m.parameters:,} ({params:,}) | {m.macs:,} | {per_epoch(m)} "
            f"| {m.training_seconds:.0f} | {m.savedmodel_bytes / 1e6:.2f} MB |"
        )
    print()
    family = latest(args.family)
    print(
        "| variant | family | setting | parameters | MACs/image | test accuracy | test loss "
        "| s/epoch (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in catalog.VARIANTS:
        if variant.name not in family:
            continue
        m = family[variant.name]
        print(
            f"| {variant.name} | {variant.family} | {variant.description} | "
            f"{m.parameters:,} | {m.macs:,} | {m.test_accuracy:.2%} | "
            f"{m.test_loss:.4f} | {per_epoch(m)} |"
        )


if __name__ == "__main__":
    main()
