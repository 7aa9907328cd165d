"""`python -m lit_pretrain.cli VERB ...`, the same as `lit-pretrain VERB ...`."""

from lit_pretrain.cli import main

main()
