"""Getting a bundle onto a board: the ssh or folder transport and the agent it runs on the board."""
