"""Results -> pandas -> rliable statistics -> LaTeX tables and figures (``bench report``; not built yet)."""
