"""Checks for the one install problem users hit: a CUDA torchvision next to a CPU torch."""


def check_lightning_imports() -> None:
    """Import Lightning, turning the torchvision mismatch into an error that says how to fix it."""
    try:
        import lightning  # noqa: F401
    except RuntimeError as err:  # raised from torchmetrics importing torchvision's compiled ops
        if "torchvision" not in str(err):
            raise
        raise ImportError(
            "`import lightning` failed inside torchvision: the installed torchvision does not match torch "
            "(PyPI's Linux torchvision wheels are CUDA builds; this torch is a CPU build). lit_pretrain does "
            "not use torchvision: remove it with `pip uninstall torchvision` (`make install` does this for "
            "you). See docs/install.md."
        ) from err
