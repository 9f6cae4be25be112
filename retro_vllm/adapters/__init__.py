"""Adapters: the peft methods trained on retrieval-augmented examples, the versioned registry
that stores them, and how the API server and vLLM load them.

    methods/       one module per peft method (lora, adalora, ia3, prompt, prefix), each the same
                   shape (methods/base.py): settings, training, checks, serving, conversion;
                   METHODS maps a method's name to it
    examples.py    training examples laid out like serving prompts
    train_lora.py  the training loop every method shares (seeded, resumable)
    validate.py    the gate before registration: better than the base model on held-out questions
    convert.py     the plain LoRA form that AdaLoRA and IA3 are converted to
    checks.py      what an adapter folder must pass, at registration and at every load
    registry.py    storage: versions, manifests, atomic writes
    catalog.py     the registry as the API server reads it (verified once per version)
    resolver.py    vLLM's LoRA resolver hook, answered from the registry

Imports nothing from retro_vllm.server, retro_vllm.cli or retro_vllm.evaluation, and vLLM only
through retro_vllm.compat. Nothing here outside methods/ compares method names: it asks METHODS.
"""
