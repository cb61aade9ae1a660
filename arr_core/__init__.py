"""arr-pipeline core: Auto-Rubric as Reward (ARR) and Rubric Policy Optimization (RPO).

Everything here is plain Python over torch/diffusers/peft/duckdb/pyarrow/openai/pillow.
Nothing in ``arr_core`` imports prefect or mlflow (see DESIGN.md); orchestration lives in
``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
