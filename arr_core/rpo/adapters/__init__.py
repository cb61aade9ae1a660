"""Policy adapters: FLUX (``flux``), SD3/SD3.5 (``sd3``), Qwen-Image-Edit (``qwen_edit``) and tiny
random components for tests (``tiny``). The toy policy of the scene world is ``arr_core.sim.toy_policy``.

Submodules are imported explicitly (``from arr_core.rpo.adapters.flux import FluxPolicy``) so that importing
one adapter does not import the others' heavy dependencies.
"""
