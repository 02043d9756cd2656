"""The optional C extension; all other packaging metadata is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# optional=True: without a C compiler or Python headers the build skips the module and
# callmeter._native falls back to pure Python.
setup(
    ext_modules=[
        Extension(
            "callmeter._speedups",
            [
                "src/callmeter/_speedups.c",
                "src/callmeter/_speedups_record.c",
                "src/callmeter/_speedups_generation.c",
            ],
            depends=["src/callmeter/_speedups.h"],
            optional=True,
            extra_compile_args=[] if sys.platform == "win32" else ["-Wno-error"],
        )
    ]
)
