from setuptools import find_packages, setup

setup(
    name="vlmeval-ivcp",
    version="0.1.0",
    description="Training-free visual-token pruning (IVC-Prune, ResPrune and baselines) for LVLMs, "
    "with a VLMEvalKit-style benchmark harness.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vlmeval_ivcp", "vlmeval_ivcp.*"]),
    package_data={"vlmeval_ivcp": ["assets/*"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<5.25",
        "pillow",
        "pandas",
        "pyyaml",
        "tqdm",
        "openai>=1.0",
        "matplotlib",
        "rapidfuzz>=3",
        "tabulate",  # pandas' to_markdown (tools/make_tables.py)
        "jinja2",  # pandas' Styler.to_latex (tools/make_tables.py)
    ],
    extras_require={
        "gpu": ["flash-attn", "qwen_vl_utils", "accelerate"],
        "test": ["pytest", "hypothesis"],
    },
    entry_points={"console_scripts": ["vlmeval-ivcp=vlmeval_ivcp.runner.cli:main"]},
)
