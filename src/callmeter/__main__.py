"""``python -m callmeter``."""

from .cli import main

main()
