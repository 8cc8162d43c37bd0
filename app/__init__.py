"""Langfuse-native observability for Pipecat voice agents: the bot, its tracer and tools."""
