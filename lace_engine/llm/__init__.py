"""LLM Adapter: one stateless interface, several providers."""
