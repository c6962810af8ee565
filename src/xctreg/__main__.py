"""``python -m xctreg`` (also what ``torchrun -m xctreg train ...`` runs)."""

from xctreg.cli import main

main()
