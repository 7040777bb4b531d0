"""Hand models: MANO (user's licensed files, read without chumpy) and a generated stand-in hand."""
