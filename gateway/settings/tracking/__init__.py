"""The tracking-rule language of `[postbacks]`: templates, conditions and rules, compiled."""
