"""Adapters that plug forge-flash into other libraries; each imports its library on import.

``forge_flash.integrations.transformers``: ``attn_implementation="forge_flash"`` for
Hugging Face transformers (install with ``pip install 'forge-flash[hf]'``).
"""
