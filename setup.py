"""Distribution of the Modbus-to-OPC UA/InfluxDB edge appliance.

Builds the Cython ring-buffer aggregator, the compiled Modbus block decoder and the
latest-value scatter; where they are not built, the pure-Python twin ``edge.aggregate.pyring``,
the numpy decoder in ``drivers.modbus.codec`` and numpy indexing in ``edge.core.store`` take their place.
"""
import sys

from setuptools import Extension, find_packages, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pyproject.toml declares Cython for isolated builds; this is --no-build-isolation
    cythonize = None
    print("warning: Cython is not installed: the aggregator extension is not built and the appliance will "
          "use its pure-Python twin (pip install Cython, or build with build isolation)", file=sys.stderr)

extensions = [
    Extension(
        "edge.aggregate._ringbuf",
        ["edge/aggregate/_ringbuf.pyx"],
        include_dirs=["edge/aggregate"],
        depends=["edge/aggregate/_kernels.h"],
        # No -ffast-math and no FMA contraction: the kernels must give the same bits as the twin.
        # AVX2 paths are compiled per function and chosen at run time (baseline stays x86-64).
        extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
    ),
    Extension(
        "drivers.modbus._codec_kernel",
        ["drivers/modbus/_codec_kernel.pyx"],
        # Same rules as above: the compiled decoder must give the bits of the numpy path.
        extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
    ),
    Extension("edge.core._latest", ["edge/core/_latest.pyx"], extra_compile_args=["-O3"]),
]
ext_modules = cythonize(extensions, language_level=3) if cythonize else []

setup(
    name="ot-edge-appliance",
    version="0.1.0",
    description="Industrial edge appliance: Modbus TCP/RTU polling to OPC UA, InfluxDB and Grafana",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["edge", "edge.*", "drivers", "drivers.*"]),
    package_data={"edge": ["py.typed", "api/static/*"], "drivers": ["*/*.yaml", "*/README.md"]},
    ext_modules=ext_modules,
    install_requires=[
        "asyncua>=2.1,<2.2",  # the OPC UA fast path relies on 2.1 internals (docs/decisions/opcua.md)
        "pymodbus>=3.8",
        "pyserial>=3.5",
        "influxdb-client>=1.40",
        "grafana-client>=4.0",
        "grafana-foundation-sdk>=1769699998!10.1.0",
        "PyYAML>=6.0",
        "pydantic>=2.6",
        "numpy>=1.26",
        "psutil>=5.9",
        "simpleeval>=1.0",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": ["Cython>=3.0", "pytest>=8", "pytest-asyncio>=0.23", "pytest-timeout>=2.2", "hypothesis>=6.90", "ruff>=0.5",
                 "tsdownsample>=0.1.3", "schemathesis>=3.30", "selenium>=4.20", "httpx>=0.27"],
    },
    entry_points={
        "console_scripts": ["edge = edge.cli.main:main"],
        "edge.drivers": ["modbus = drivers.modbus.driver:DRIVER", "system = drivers.system.driver:DRIVER"],
    },
    zip_safe=False,
)
