"""What workflow authors import. Nothing here depends on the engine or storage."""
