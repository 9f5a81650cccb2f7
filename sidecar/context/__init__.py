"""The context window: prompt packs, per-model policies, token counts, trimming into summaries."""
