"""Tiny test models: a from-scratch original-DiT clone and small diffusers DiT builders."""
