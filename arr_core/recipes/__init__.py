"""Recipes: the only composers. Each builds everything one stage needs from its config and runs it
(torchtune's recipe/component split): ``induce``, ``rpo``, ``evaluate``. The CLI, the Prefect tasks
and the benchmark scripts call these and build nothing themselves."""
