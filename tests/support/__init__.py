"""Test-only code the servers under test load (fault injection): never imported by retro_vllm."""
